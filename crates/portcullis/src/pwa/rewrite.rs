//! Puts the response's nonce on the HTML's scripts (and styles, when configured) with a real
//! HTML tokenizer (`lol_html`), never a regex: what the browser will parse as a `<script>` is
//! what gets the nonce.
//!
//! Any `nonce` attribute already in the file is removed or overwritten first, on every element:
//! a file that an attacker managed to influence must not choose its own nonce (the CSP nonce is
//! only meaningful because nobody but this response knows it).

use lol_html::{HtmlRewriter, Settings, element, errors::RewritingError, html_content::Element};

/// `true` for `<link rel="… stylesheet …">` (the `rel` token list, ASCII case-insensitive).
fn is_stylesheet_link(el: &Element<'_, '_>) -> bool {
    el.get_attribute("rel").is_some_and(|rel| {
        rel.split_ascii_whitespace()
            .any(|t| t.eq_ignore_ascii_case("stylesheet"))
    })
}

/// Rewrites `html` (UTF-8) so that every `<script>` — and, with `style_nonce`, every `<style>`
/// and `<link rel=stylesheet>` — carries `nonce`, and no other element carries a nonce at all.
pub fn add_nonce(html: &[u8], nonce: &str, style_nonce: bool) -> Result<Vec<u8>, RewritingError> {
    let wants_nonce = |el: &Element<'_, '_>| match el.tag_name().as_str() {
        "script" => true,
        "style" => style_nonce,
        "link" => style_nonce && is_stylesheet_link(el),
        _ => false,
    };
    let mut out = Vec::with_capacity(html.len() + 256);
    let mut rewriter = HtmlRewriter::new(
        // Both handlers may see the same element; each leaves it in the same final state, so
        // their order does not matter.
        Settings::new()
            .append_element_content_handler(element!("[nonce]", |el| {
                // Removes every copy (browsers read the first of duplicated attributes; none of
                // the file's may survive), then sets ours.
                el.remove_attribute("nonce");
                if wants_nonce(el) {
                    el.set_attribute("nonce", nonce)?;
                }
                Ok(())
            }))
            .append_element_content_handler(element!("script, style, link", |el| {
                if wants_nonce(el) {
                    el.set_attribute("nonce", nonce)?;
                }
                Ok(())
            })),
        |chunk: &[u8]| out.extend_from_slice(chunk),
    );
    rewriter.write(html)?;
    rewriter.end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(html: &str, style: bool) -> String {
        String::from_utf8(add_nonce(html.as_bytes(), "N", style).expect("rewrite")).expect("utf8")
    }

    #[test]
    fn every_script_gets_the_nonce() {
        let out = rw(
            r#"<!doctype html><html><head><script src="/a.js"></script><SCRIPT type=module>import "/b.js"</SCRIPT></head><body><svg><script>1</script></svg><script>if (a < b) {}</script></body></html>"#,
            false,
        );
        assert_eq!(out.matches(r#"nonce="N""#).count(), 4, "{out}");
        assert!(
            out.contains("if (a < b) {}"),
            "script text untouched: {out}"
        );
    }

    #[test]
    fn existing_nonces_are_replaced_or_removed() {
        let out = rw(
            r#"<script nonce="attacker">x</script><div nonce="attacker"></div><style nonce="attacker"></style><script NONCE='a' nonce=b>y</script>"#,
            false,
        );
        assert!(!out.contains("attacker"), "{out}");
        assert!(!out.contains("nonce=b") && !out.contains("'a'"), "{out}");
        assert!(!out.contains("NONCE"), "{out}");
        assert_eq!(out.matches(r#"nonce="N""#).count(), 2, "{out}");
    }

    #[test]
    fn styles_only_when_configured() {
        let html = r#"<link rel="preload stylesheet" href="/a.css"><link rel=icon href=/i.png><style>p{}</style><script></script>"#;
        let without = rw(html, false);
        assert_eq!(without.matches("nonce").count(), 1, "{without}");
        let with = rw(html, true);
        assert_eq!(with.matches(r#"nonce="N""#).count(), 3, "{with}");
        assert!(with.contains(r#"<link rel=icon href=/i.png>"#), "{with}");
    }

    #[test]
    fn script_looking_text_is_not_a_script() {
        let out = rw(
            r#"<!-- <script></script> --><textarea><script></script></textarea><p>&lt;script&gt;</p>"#,
            false,
        );
        assert!(!out.contains("nonce"), "{out}");
    }
}
