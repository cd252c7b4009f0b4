//! Part URL templates: `/api/orders?user={sub}&limit={query.limit}`.
//!
//! Placeholders: `{sub}` (the session's subject), `{claims.NAME}` (an ID token claim kept in
//! the session), `{path.NAME}` (a `{NAME}` segment of the aggregate's path) and `{query.NAME}`
//! (a parameter of the incoming query). Every substituted value is percent-encoded, everything
//! but ASCII letters, digits, `-`, `_` and `~` (the dot too): a value can never add a path
//! segment (`/`, `..`), a query parameter (`&`, `=`, `?`) or a fragment.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

/// What may appear unencoded in a substituted value.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    Sub,
    Claim(String),
    Path(String),
    Query(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(Var),
}

/// A parsed part URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// The values placeholders are filled from.
#[derive(Debug)]
pub struct Values<'a> {
    pub sub: &'a str,
    pub claims: &'a Map<String, Value>,
    pub path: &'a [(String, String)],
    pub query: &'a [(String, String)],
}

/// A placeholder without a usable value (absent, empty, or a claim that is not a string,
/// number or boolean).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub Var);

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Lit(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("`{s}`: unclosed `{{`"))?
                + open;
            let name = &rest[open + 1..close];
            let var = match name.split_once('.') {
                None if name == "sub" => Var::Sub,
                Some(("claims", n)) if is_name(n) => Var::Claim(n.to_owned()),
                Some(("path", n)) if is_name(n) => Var::Path(n.to_owned()),
                Some(("query", n)) if is_name(n) => Var::Query(n.to_owned()),
                _ => {
                    return Err(format!(
                        "`{{{name}}}`: use {{sub}}, {{claims.NAME}}, {{path.NAME}} or {{query.NAME}}"
                    ));
                }
            };
            pieces.push(Piece::Var(var));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{s}`: unmatched `}}`"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Lit(rest.to_owned()));
        }
        let t = Template { pieces };
        let lead = t.leading_literal();
        if !lead.starts_with('/') {
            return Err(format!("`{s}` must start with a literal `/path`"));
        }
        if t.literals().any(|l| {
            l.contains('#')
                || l.contains("//")
                || l.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        }) {
            return Err(format!("`{s}` must not contain `#`, `//` or whitespace"));
        }
        let path_part = lead.split('?').next().unwrap_or_default();
        if path_part.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(format!("`{s}` must not contain dot segments"));
        }
        Ok(t)
    }

    /// The literal text before the first placeholder: it names the route the part goes to.
    pub fn leading_literal(&self) -> &str {
        match self.pieces.first() {
            Some(Piece::Lit(l)) => l,
            _ => "",
        }
    }

    fn literals(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Lit(l) => Some(l.as_str()),
            Piece::Var(_) => None,
        })
    }

    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v),
            Piece::Lit(_) => None,
        })
    }

    /// The gateway path-and-query with every placeholder filled and percent-encoded.
    pub fn render(&self, values: &Values<'_>) -> Result<String, Missing> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(l) => out.push_str(l),
                Piece::Var(v) => {
                    let raw = lookup(v, values)
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| Missing(v.clone()))?;
                    out.extend(utf8_percent_encode(&raw, VALUE));
                }
            }
        }
        Ok(out)
    }
}

fn lookup(var: &Var, v: &Values<'_>) -> Option<String> {
    let find = |list: &[(String, String)], name: &str| {
        list.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    };
    match var {
        Var::Sub => Some(v.sub.to_owned()),
        Var::Claim(name) if name == "sub" => Some(v.sub.to_owned()),
        Var::Claim(name) => match v.claims.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        },
        Var::Path(name) => find(v.path, name),
        Var::Query(name) => find(v.query, name),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(t: &str, sub: &str, query: &[(&str, &str)]) -> Result<String, Missing> {
        let claims = json!({"tenant": "acme corp", "n": 5, "groups": ["a"]});
        let query: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let path = vec![("id".to_owned(), "42".to_owned())];
        Template::parse(t).expect("valid").render(&Values {
            sub,
            claims: claims.as_object().expect("object"),
            path: &path,
            query: &query,
        })
    }

    #[test]
    fn fills_every_kind_of_placeholder() {
        assert_eq!(
            render(
                "/api/u/{sub}/{path.id}?t={claims.tenant}&n={claims.n}&l={query.limit}",
                "alice",
                &[("limit", "10")]
            ),
            Ok("/api/u/alice/42?t=acme%20corp&n=5&l=10".to_owned())
        );
    }

    #[test]
    fn values_cannot_inject_segments_or_parameters() {
        assert_eq!(
            render("/api/u/{sub}?x=1", "a/../../admin?y=2&z=3#f", &[]),
            Ok("/api/u/a%2F%2E%2E%2F%2E%2E%2Fadmin%3Fy%3D2%26z%3D3%23f?x=1".to_owned())
        );
        assert_eq!(
            render("/api/u/{sub}", "..", &[]),
            Ok("/api/u/%2E%2E".to_owned())
        );
        assert_eq!(
            render("/api/o?user={query.u}", "x", &[("u", "a&admin=true")]),
            Ok("/api/o?user=a%26admin%3Dtrue".to_owned())
        );
    }

    #[test]
    fn missing_values_are_errors() {
        assert_eq!(
            render("/api/o?l={query.limit}", "x", &[]),
            Err(Missing(Var::Query("limit".into())))
        );
        assert_eq!(
            render("/api/o?l={query.limit}", "x", &[("limit", "")]),
            Err(Missing(Var::Query("limit".into())))
        );
        assert_eq!(
            render("/api/o/{claims.groups}", "x", &[]),
            Err(Missing(Var::Claim("groups".into())))
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "api/o",
            "{sub}/x",
            "/api/{who}",
            "/api/{sub",
            "/api/}",
            "/api/../x",
            "/api//x",
            "/api/x#f",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Template::parse("/api/o/{sub}")
                .expect("ok")
                .leading_literal(),
            "/api/o/"
        );
    }
}
