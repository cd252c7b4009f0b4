//! `[[aggregates]]`, `[[profiles]]` and the policy keys of `[[routes]]` (see
//! `docs/api-composition.md`): the raw TOML shapes and their validation.

use std::{collections::BTreeMap, time::Duration};

use http::Method;
use serde::Deserialize;

use super::{RouteConfig, Validator, path_within, units};
use crate::compose::{placeholders::Template, trim::Selection};

/// The request header that selects a client profile.
pub const PROFILE_HEADER: &str = "x-client-profile";
const DEFAULT_PART_MAX: u64 = 1024 * 1024;
const DEFAULT_AGGREGATE_MAX: u64 = 4 * 1024 * 1024;
const DEFAULT_PROFILE_MAX: u64 = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAggregate {
    pub path: String,
    pub max_size: Option<String>,
    pub profile: Option<String>,
    #[serde(default)]
    pub parts: Vec<RawPart>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPart {
    pub name: String,
    pub path: String,
    pub timeout: Option<String>,
    #[serde(default = "yes")]
    pub required: bool,
    pub max_size: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub name: String,
    pub max_body: Option<String>,
    #[serde(default)]
    pub select: Vec<RawSelect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelect {
    pub route: Option<String>,
    pub aggregate: Option<String>,
    pub part: Option<String>,
    pub fields: Vec<String>,
}

/// The policy keys of one `[[routes]]` entry, as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawPolicy {
    pub methods: Option<Vec<String>>,
    pub public: Option<bool>,
    #[serde(default)]
    pub require_claims: BTreeMap<String, String>,
    #[serde(default)]
    pub require_scopes: Vec<String>,
    pub profile: Option<String>,
}

/// Who may use a route and how (see `crate::compose::policy`).
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    /// `None`: every method. `GET` also allows `HEAD`.
    pub methods: Option<Vec<Method>>,
    /// No session needed, no token attached, the cookie never forwarded.
    pub public: bool,
    /// Claim name → value the claim must equal (or, for an array claim, contain).
    pub require_claims: Vec<(String, String)>,
    /// Scopes the session's access token must have been granted.
    pub require_scopes: Vec<String>,
    /// A fixed client profile for this route (`X-Client-Profile` is then ignored).
    pub profile: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AggregateConfig {
    /// The gateway path, `{name}` segments allowed (e.g. `/api/users/{id}/dashboard`).
    pub path: String,
    pub parts: Vec<PartConfig>,
    pub max_total: usize,
    pub profile: Option<String>,
}

impl AggregateConfig {
    /// `true` when `path` is this aggregate's path (see [`path_matches`]).
    pub fn matches(&self, path: &str) -> bool {
        path_matches(&self.path, path)
    }
}

/// `true` when `path` matches the aggregate path `pattern`, on the raw path as the router does,
/// a `{name}` segment matching any non-empty segment. (The router would also let `{name}` match
/// an empty one, `//`; the hygiene layer refuses such paths before either is asked.)
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w == g || (w.starts_with('{') && !g.is_empty()) => {}
            _ => return false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PartConfig {
    pub name: String,
    pub template: Template,
    /// The route (by prefix) the part's path lies under.
    pub route: String,
    pub timeout: Duration,
    pub required: bool,
    pub max_size: usize,
}

#[derive(Debug, Clone)]
pub struct ProfileConfig {
    pub name: String,
    /// The largest plain-route response body buffered for trimming.
    pub max_body: usize,
    /// Route prefix → selection.
    pub routes: Vec<(String, Selection)>,
    /// (aggregate path, part name) → selection.
    pub parts: Vec<(String, String, Selection)>,
}

/// Aggregates and client profiles.
#[derive(Debug, Clone, Default)]
pub struct ComposeConfig {
    pub aggregates: Vec<AggregateConfig>,
    pub profiles: Vec<ProfileConfig>,
}

impl ComposeConfig {
    pub fn profile(&self, name: &str) -> Option<&ProfileConfig> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// Whether some profile selects fields of the route with this prefix.
    pub fn trims_route(&self, prefix: &str) -> bool {
        self.profiles
            .iter()
            .any(|p| p.routes.iter().any(|(r, _)| r == prefix))
    }

    /// Claim names the session must keep for policies and placeholders.
    pub fn claims_needed(&self, routes: &[RouteConfig]) -> Vec<String> {
        let mut names: Vec<String> = routes
            .iter()
            .flat_map(|r| r.policy.require_claims.iter().map(|(c, _)| c.clone()))
            .chain(self.aggregates.iter().flat_map(|a| {
                a.parts.iter().flat_map(|p| {
                    p.template.vars().filter_map(|v| match v {
                        crate::compose::placeholders::Var::Claim(c) => Some(c.clone()),
                        _ => None,
                    })
                })
            }))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Validator {
    fn size(&mut self, key: &str, v: Option<String>, default: u64) -> usize {
        let n = match v {
            None => default,
            Some(s) => self.ok(key, units::parse_size(&s)).unwrap_or(default),
        };
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    pub(super) fn route_policy(&mut self, key: &str, raw: RawPolicy) -> RoutePolicy {
        let methods = raw.methods.map(|ms| {
            if ms.is_empty() {
                self.problem(&format!("{key}.methods"), "must list at least one method");
            }
            ms.iter()
                .filter_map(|m| {
                    let ok = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
                    let parsed = ok.then(|| Method::from_bytes(m.as_bytes()).ok()).flatten();
                    if parsed.is_none() {
                        self.problem(
                            &format!("{key}.methods"),
                            format!("`{m}` is not an upper-case HTTP method"),
                        );
                    }
                    parsed
                })
                .collect()
        });
        let public = raw.public.unwrap_or(false);
        if public && (!raw.require_claims.is_empty() || !raw.require_scopes.is_empty()) {
            self.problem(
                &format!("{key}.public"),
                "a public route has no session: it cannot require claims or scopes",
            );
        }
        RoutePolicy {
            methods,
            public,
            require_claims: raw.require_claims.into_iter().collect(),
            require_scopes: raw.require_scopes,
            profile: raw.profile,
        }
    }

    pub(super) fn compose(
        &mut self,
        aggregates: Vec<RawAggregate>,
        profiles: Vec<RawProfile>,
        routes: &[RouteConfig],
        bff_prefix: &str,
    ) -> ComposeConfig {
        let aggregates: Vec<AggregateConfig> = aggregates
            .into_iter()
            .enumerate()
            .filter_map(|(i, a)| self.aggregate(&format!("aggregates[{i}]"), a, routes, bff_prefix))
            .collect();
        let mut seen: Vec<String> = Vec::new();
        for (i, a) in aggregates.iter().enumerate() {
            // `{a}` and `{b}` in the same place are the same route to the router.
            let shape: String = a
                .path
                .split('/')
                .map(|s| if s.starts_with('{') { "{}" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            if seen.contains(&shape) {
                self.problem(&format!("aggregates[{i}].path"), "configured twice");
            }
            seen.push(shape);
        }
        let out_profiles: Vec<ProfileConfig> = profiles
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| {
                self.profile_cfg(&format!("profiles[{i}]"), p, routes, &aggregates)
            })
            .collect();
        for (i, p) in out_profiles.iter().enumerate() {
            if out_profiles[..i].iter().any(|o| o.name == p.name) {
                self.problem(
                    &format!("profiles[{i}].name"),
                    format!("`{}` is configured twice", p.name),
                );
            }
        }
        for (i, r) in routes.iter().enumerate() {
            if r.websocket && r.policy.public {
                // A WebSocket is tied to the session that opened it (closed when it ends).
                self.problem(
                    &format!("routes[{i}].public"),
                    "a WebSocket route needs a session",
                );
            }
        }
        let known = |n: &str| out_profiles.iter().any(|p| p.name == n);
        let mut unknown = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            if let Some(p) = r.policy.profile.as_deref().filter(|p| !known(p)) {
                unknown.push((format!("routes[{i}].profile"), p.to_owned()));
            }
        }
        for (i, a) in aggregates.iter().enumerate() {
            if let Some(p) = a.profile.as_deref().filter(|p| !known(p)) {
                unknown.push((format!("aggregates[{i}].profile"), p.to_owned()));
            }
        }
        for (key, p) in unknown {
            self.problem(&key, format!("no profile is named `{p}`"));
        }
        ComposeConfig {
            aggregates,
            profiles: out_profiles,
        }
    }

    fn aggregate(
        &mut self,
        key: &str,
        raw: RawAggregate,
        routes: &[RouteConfig],
        bff_prefix: &str,
    ) -> Option<AggregateConfig> {
        let path_ok = raw.path.starts_with('/')
            && raw.path.len() > 1
            && !raw.path.ends_with('/')
            && raw.path[1..].split('/').all(|seg| {
                let var = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
                match var {
                    Some(name) => is_token(name) && !name.contains('.'),
                    None => {
                        !seg.is_empty()
                            && seg != "."
                            && seg != ".."
                            && seg.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
                            })
                    }
                }
            });
        if !path_ok {
            self.problem(
                &format!("{key}.path"),
                format!(
                    "`{}` must look like `/api/dashboard` or `/api/users/{{id}}/summary`",
                    raw.path
                ),
            );
            return None;
        }
        if path_within(&raw.path, bff_prefix)
            || ["/healthz", "/readyz"].contains(&raw.path.as_str())
        {
            self.problem(&format!("{key}.path"), "overlaps a built-in endpoint");
            return None;
        }
        let path_vars: Vec<&str> = raw.path[1..]
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        if raw.parts.is_empty() {
            self.problem(&format!("{key}.parts"), "needs at least one part");
        }
        let mut parts: Vec<PartConfig> = Vec::new();
        for (j, p) in raw.parts.into_iter().enumerate() {
            let pk = format!("{key}.parts[{j}]");
            if !is_token(&p.name) || p.name.starts_with('_') {
                self.problem(
                    &format!("{pk}.name"),
                    "letters, digits, `-`, `_`, `.`; not starting with `_`",
                );
            }
            if parts.iter().any(|o| o.name == p.name) {
                self.problem(&format!("{pk}.name"), format!("`{}` is used twice", p.name));
            }
            let Some(template) = self.ok(&format!("{pk}.path"), Template::parse(&p.path)) else {
                continue;
            };
            for v in template.vars() {
                if let crate::compose::placeholders::Var::Path(n) = v
                    && !path_vars.contains(&n.as_str())
                {
                    self.problem(
                        &format!("{pk}.path"),
                        format!("`{{path.{n}}}` is not a segment of `{}`", raw.path),
                    );
                }
            }
            let lead = template.leading_literal();
            let lead_path = lead.split('?').next().unwrap_or_default();
            let has_query = lead.contains('?') || template.vars().next().is_none();
            let route = routes
                .iter()
                .filter(|r| {
                    if has_query {
                        path_within(lead_path, &r.prefix)
                    } else {
                        lead_path.starts_with(&format!("{}/", r.prefix))
                    }
                })
                .max_by_key(|r| r.prefix.len());
            let Some(route) = route else {
                self.problem(
                    &format!("{pk}.path"),
                    format!("`{}` lies under no configured route", p.path),
                );
                continue;
            };
            let timeout = self.timeout(&format!("{pk}.timeout"), p.timeout, route.timeout);
            let max_size = self.size(&format!("{pk}.max_size"), p.max_size, DEFAULT_PART_MAX);
            parts.push(PartConfig {
                name: p.name,
                template,
                route: route.prefix.clone(),
                timeout,
                required: p.required,
                max_size,
            });
        }
        let max_total = self.size(
            &format!("{key}.max_size"),
            raw.max_size,
            DEFAULT_AGGREGATE_MAX,
        );
        Some(AggregateConfig {
            path: raw.path,
            parts,
            max_total,
            profile: raw.profile,
        })
    }

    fn profile_cfg(
        &mut self,
        key: &str,
        raw: RawProfile,
        routes: &[RouteConfig],
        aggregates: &[AggregateConfig],
    ) -> Option<ProfileConfig> {
        if !is_token(&raw.name) {
            self.problem(
                &format!("{key}.name"),
                "1 to 64 letters, digits, `-`, `_` or `.`",
            );
            return None;
        }
        let max_body = self.size(
            &format!("{key}.max_body"),
            raw.max_body,
            DEFAULT_PROFILE_MAX,
        );
        let mut out = ProfileConfig {
            name: raw.name,
            max_body,
            routes: Vec::new(),
            parts: Vec::new(),
        };
        for (j, s) in raw.select.into_iter().enumerate() {
            let sk = format!("{key}.select[{j}]");
            let Some(sel) = self.ok(&format!("{sk}.fields"), Selection::parse(&s.fields)) else {
                continue;
            };
            match (s.route, s.aggregate, s.part) {
                (Some(r), None, None) => {
                    if !routes.iter().any(|c| c.prefix == r) {
                        self.problem(
                            &format!("{sk}.route"),
                            format!("no route has the prefix `{r}`"),
                        );
                    } else if out.routes.iter().any(|(o, _)| *o == r) {
                        self.problem(&format!("{sk}.route"), format!("`{r}` is selected twice"));
                    } else {
                        out.routes.push((r, sel));
                    }
                }
                (None, Some(a), Some(p)) => {
                    let exists = aggregates
                        .iter()
                        .any(|c| c.path == a && c.parts.iter().any(|x| x.name == p));
                    if !exists {
                        self.problem(
                            &format!("{sk}.part"),
                            format!("aggregate `{a}` has no part `{p}`"),
                        );
                    } else if out.parts.iter().any(|(oa, op, _)| *oa == a && *op == p) {
                        self.problem(
                            &format!("{sk}.part"),
                            format!("`{a}` part `{p}` is selected twice"),
                        );
                    } else {
                        out.parts.push((a, p, sel));
                    }
                }
                _ => self.problem(&sk, "set either `route`, or `aggregate` and `part`"),
            }
        }
        Some(out)
    }
}

#[cfg(test)]
#[path = "compose_tests.rs"]
mod tests;
