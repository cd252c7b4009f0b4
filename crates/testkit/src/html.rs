//! A deliberately tiny HTML form scanner, tied to the markup that the IdP
//! fixture (`idp/server.mjs`) and oidc-provider's own form_post / logout pages
//! render: `<form ... action="..." method="...">` followed by `<input ...>`
//! tags up to `</form>`, attributes quoted with `"` or `'`. It is not an HTML
//! parser and must not be used on arbitrary pages.

/// A form found in a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// The `id` attribute, if any.
    pub id: Option<String>,
    /// The `action` attribute, entity-decoded (may be relative).
    pub action: Option<String>,
    /// The `method` attribute, uppercased (`GET` when absent).
    pub method: String,
    /// The `<input>` elements inside the form: (name, value, type).
    pub inputs: Vec<Input>,
}

/// An `<input>` of a [`Form`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// `name`.
    pub name: String,
    /// `value` (entity-decoded; empty when absent).
    pub value: String,
    /// `type`, lowercased (`text` when absent).
    pub kind: String,
}

impl Form {
    /// `true` if the form has an input called `name`.
    pub fn has_input(&self, name: &str) -> bool {
        self.inputs.iter().any(|i| i.name == name)
    }

    /// The hidden inputs as (name, value) pairs.
    pub fn hidden_fields(&self) -> Vec<(String, String)> {
        self.inputs
            .iter()
            .filter(|i| i.kind == "hidden")
            .map(|i| (i.name.clone(), i.value.clone()))
            .collect()
    }
}

/// Every form in `html`, in document order.
pub fn forms(html: &str) -> Vec<Form> {
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(start) = find_tag(&lower, "form", pos) {
        let Some(tag_end) = lower[start..].find('>').map(|i| start + i) else {
            break;
        };
        let attrs = attributes(&html[start + 5..tag_end]);
        let body_end = lower[tag_end..]
            .find("</form")
            .map_or(html.len(), |i| tag_end + i);
        let mut inputs = Vec::new();
        let mut ipos = tag_end;
        while let Some(istart) = find_tag(&lower[..body_end], "input", ipos) {
            let Some(iend) = lower[istart..body_end].find('>').map(|i| istart + i) else {
                break;
            };
            let a = attributes(&html[istart + 6..iend]);
            if let Some(name) = get(&a, "name") {
                inputs.push(Input {
                    name,
                    value: get(&a, "value").unwrap_or_default(),
                    kind: get(&a, "type")
                        .map_or_else(|| "text".to_owned(), |t| t.to_ascii_lowercase()),
                });
            }
            ipos = iend;
        }
        out.push(Form {
            id: get(&attrs, "id"),
            action: get(&attrs, "action"),
            method: get(&attrs, "method")
                .map_or_else(|| "GET".to_owned(), |m| m.to_ascii_uppercase()),
            inputs,
        });
        pos = body_end;
    }
    out
}

/// Position of the next `<tag` (followed by whitespace, `/` or `>`) at or
/// after `from`, in the lowercased document.
fn find_tag(lower: &str, tag: &str, from: usize) -> Option<usize> {
    let needle = format!("<{tag}");
    let mut pos = from;
    while let Some(i) = lower.get(pos..)?.find(&needle) {
        let at = pos + i;
        let next = lower.as_bytes().get(at + needle.len()).copied();
        if matches!(next, Some(b' ' | b'\t' | b'\n' | b'\r' | b'/' | b'>')) {
            return Some(at);
        }
        pos = at + needle.len();
    }
    None
}

fn get(attrs: &[(String, String)], name: &str) -> Option<String> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Attributes of a tag body (`name="v" name2='v' flag`), names lowercased,
/// values entity-decoded.
fn attributes(s: &str) -> Vec<(String, String)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'=' && b[i] != b'/' {
            i += 1;
        }
        if start == i {
            break;
        }
        let name = s[start..i].to_ascii_lowercase();
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                i += 1;
                let vs = i;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                value = decode_entities(&s[vs..i]);
                i += 1;
            } else {
                let vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() {
                    i += 1;
                }
                value = decode_entities(&s[vs..i]);
            }
        }
        out.push((name, value));
    }
    out
}

/// Decodes the entities that `htmlSafe`/`esc` produce plus numeric ones.
pub fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';').filter(|&e| e <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity.strip_prefix('#').and_then(|n| {
                let code = match n.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => n.parse().ok(),
                };
                code.and_then(char::from_u32)
            }),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_form() {
        let html = r#"<h1>Sign in</h1>
<form id="login" method="post" action="/interaction/abc-DEF_1/login">
<label>Username <input type="text" name="login" value="" autofocus required></label>
<label>Password <input type="password" name="password" required></label>
<button type="submit">Sign in</button>
</form>"#;
        let f = forms(html);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id.as_deref(), Some("login"));
        assert_eq!(f[0].method, "POST");
        assert_eq!(f[0].action.as_deref(), Some("/interaction/abc-DEF_1/login"));
        assert!(f[0].has_input("login"));
        assert!(f[0].has_input("password"));
    }

    #[test]
    fn form_post_page() {
        let html = r#"<form method="post" action="http://127.0.0.1:1/session/end/confirm?a=1&amp;b=2">
    <input type="hidden" name="xsrf" value="x&#39;y"/>
<input type="hidden" name="logout" value="yes"/>
  </form>"#;
        let f = forms(html);
        assert_eq!(
            f[0].action.as_deref(),
            Some("http://127.0.0.1:1/session/end/confirm?a=1&b=2")
        );
        assert_eq!(
            f[0].hidden_fields(),
            vec![
                ("xsrf".to_owned(), "x'y".to_owned()),
                ("logout".to_owned(), "yes".to_owned())
            ]
        );
    }
}
