//! Field selection ("trimming") of a JSON document with RFC 9535 JSONPath queries.
//!
//! A selection is a list of queries. The output keeps exactly the nodes some query selects, at
//! their original positions, and the structure leading to them:
//!
//! - objects keep only the members on the way to a selected node, in their original order;
//! - arrays keep only the elements on the way to a selected node, in their original order, and
//!   are compacted (an element with nothing selected is dropped, so indices may shift);
//! - a selected node is kept whole (selecting `$.a` and `$.a.b` keeps all of `a`);
//! - a query that selects nothing (a missing field) adds nothing: no `null` placeholder;
//! - when nothing at all is selected the result is `{}` for an object, `[]` for an array, and
//!   `null` for a scalar root.
//!
//! Queries are parsed once, at configuration time, by `serde_json_path` (no home-made parser).

use serde_json::{Map, Value};
use serde_json_path::{JsonPath, PathElement};

/// A parsed field selection (cheap to clone: the parsed queries are shared).
#[derive(Debug, Clone)]
pub struct Selection {
    queries: std::sync::Arc<[JsonPath]>,
}

impl Selection {
    /// Parses every query; the error names the first one that is not RFC 9535 JSONPath.
    pub fn parse<S: AsRef<str>>(queries: &[S]) -> Result<Selection, String> {
        if queries.is_empty() {
            return Err("needs at least one JSONPath query".into());
        }
        let queries = queries
            .iter()
            .map(|q| {
                JsonPath::parse(q.as_ref())
                    .map_err(|e| format!("`{}` is not a JSONPath query: {e}", q.as_ref()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Selection {
            queries: queries.into(),
        })
    }

    /// The document reduced to the selected nodes (see the module docs for the exact rules).
    pub fn apply(&self, doc: &Value) -> Value {
        let mut located: Vec<Vec<PathElement<'_>>> = Vec::new();
        for q in self.queries.iter() {
            for node in q.query_located(doc) {
                located.push(node.location().iter().cloned().collect());
            }
        }
        let refs: Vec<&[PathElement<'_>]> = located.iter().map(Vec::as_slice).collect();
        project(doc, &refs)
    }
}

fn project(value: &Value, paths: &[&[PathElement<'_>]]) -> Value {
    if paths.iter().any(|p| p.is_empty()) {
        return value.clone();
    }
    match value {
        Value::Object(members) => {
            let mut out = Map::new();
            for (key, child) in members {
                let rests: Vec<&[PathElement<'_>]> = paths
                    .iter()
                    .filter(|p| p[0].as_name() == Some(key.as_str()))
                    .map(|p| &p[1..])
                    .collect();
                if !rests.is_empty() {
                    out.insert(key.clone(), project(child, &rests));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, child)| {
                    let rests: Vec<&[PathElement<'_>]> = paths
                        .iter()
                        .filter(|p| p[0].as_index() == Some(i))
                        .map(|p| &p[1..])
                        .collect();
                    (!rests.is_empty()).then(|| project(child, &rests))
                })
                .collect(),
        ),
        // Locations come from this very document, so a scalar is only reached by an empty path;
        // `null` covers "nothing selected" at a scalar root.
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn trim(queries: &[&str], doc: Value) -> Value {
        Selection::parse(queries).expect("valid").apply(&doc)
    }

    #[test]
    fn keeps_selected_members_at_their_positions() {
        let doc = json!({"id": 7, "name": "n", "secret": "s", "nested": {"a": 1, "b": 2}});
        assert_eq!(
            trim(&["$.id", "$.nested.b"], doc),
            json!({"id": 7, "nested": {"b": 2}})
        );
    }

    #[test]
    fn arrays_are_compacted_in_original_order() {
        let doc = json!({"items": [
            {"id": 1, "sku": "a", "price": 10},
            {"sku": "b", "price": 20},
            {"id": 3, "sku": "c", "price": 30}
        ]});
        assert_eq!(
            trim(&["$.items[*].id"], doc.clone()),
            json!({"items": [{"id": 1}, {"id": 3}]})
        );
        assert_eq!(
            trim(&["$.items[*].price", "$.items[0].sku"], doc),
            json!({"items": [{"sku": "a", "price": 10}, {"price": 20}, {"price": 30}]})
        );
    }

    #[test]
    fn missing_fields_add_nothing_and_whole_nodes_win() {
        assert_eq!(trim(&["$.nope"], json!({"a": 1})), json!({}));
        assert_eq!(trim(&["$[*].x"], json!([{"y": 1}])), json!([]));
        assert_eq!(
            trim(&["$.a", "$.a.b"], json!({"a": {"b": 1, "c": 2}, "d": 3})),
            json!({"a": {"b": 1, "c": 2}})
        );
        assert_eq!(trim(&["$"], json!({"a": 1})), json!({"a": 1}));
    }

    #[test]
    fn filters_select_by_value() {
        let doc = json!([{"s": "open", "id": 1}, {"s": "done", "id": 2}]);
        assert_eq!(trim(&["$[?@.s == 'open'].id"], doc), json!([{"id": 1}]));
    }

    #[test]
    fn invalid_queries_are_refused() {
        assert!(Selection::parse(&["items[0]"]).is_err());
        assert!(Selection::parse::<&str>(&[]).is_err());
    }
}
