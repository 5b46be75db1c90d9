//! `{{ name }}` templates: in journey URLs, headers, queries and bodies (captures of earlier
//! steps, the journey's `secrets` as `{{ secret.x }}`), and `{{ deployment.version }}`,
//! `.id` and `.environment` in any check's URL, headers and expectations. Parsed at load, so
//! every reference is checked before the first run. Rendering never fails: a capture that
//! produced no value renders as an empty string, and the step that needed it fails on its
//! own asserts.
//!
//! Deployment variables name the latest deployment of the check's service. The runner
//! ([`crate::runtime::execute`]) makes it [`current`] for the duration of one run, so probes
//! and assertions read the same deployment from start to end of that run.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value as Json;

/// A reference inside `{{ … }}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// A value captured by an earlier step.
    Capture(String),
    /// `secret.name`: from the journey's `secrets` table.
    Secret(String),
    /// `deployment.version` / `.id` / `.environment`.
    Deployment(DeployField),
}

/// What `{{ deployment.* }}` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployField {
    Id,
    Version,
    Environment,
}

impl DeployField {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployField::Id => "id",
            DeployField::Version => "version",
            DeployField::Environment => "environment",
        }
    }
}

/// The deployment a run's `{{ deployment.* }}` resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentVars {
    pub id: String,
    pub version: String,
    pub environment: String,
}

impl DeploymentVars {
    pub fn get(&self, field: DeployField) -> &str {
        match field {
            DeployField::Id => &self.id,
            DeployField::Version => &self.version,
            DeployField::Environment => &self.environment,
        }
    }

    /// Stand-in values for checking at load that a rendered URL, header or regex is valid.
    pub fn sample() -> DeploymentVars {
        DeploymentVars {
            id: "sample-id".into(),
            version: "0.0.0-sample".into(),
            environment: "sample".into(),
        }
    }
}

tokio::task_local! {
    static CURRENT: Option<Arc<DeploymentVars>>;
}

/// The deployment of the run in progress (None outside a run, or before the service's first
/// deployment).
pub fn current() -> Option<Arc<DeploymentVars>> {
    CURRENT.try_with(Clone::clone).ok().flatten()
}

/// Runs `fut` with `vars` as the [`current`] deployment.
pub async fn with_deployment<F: std::future::Future>(
    vars: Option<Arc<DeploymentVars>>,
    fut: F,
) -> F::Output {
    CURRENT.scope(vars, fut).await
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Var(Var),
}

/// A parsed template string.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
    /// The text as written, for reports (never rendered values, which may be secret).
    source: String,
}

/// Values available while a template renders.
#[derive(Debug, Default)]
pub struct Scope {
    pub captures: HashMap<String, Json>,
    pub secrets: HashMap<String, String>,
    pub deployment: Option<Arc<DeploymentVars>>,
}

impl Scope {
    /// Only the deployment: what checks other than journeys can refer to.
    pub fn of_deployment(deployment: Option<Arc<DeploymentVars>>) -> Scope {
        Scope {
            deployment,
            ..Scope::default()
        }
    }

    fn lookup(&self, var: &Var) -> Option<Json> {
        match var {
            Var::Capture(n) => self.captures.get(n).cloned(),
            Var::Secret(n) => self.secrets.get(n).map(|s| Json::String(s.clone())),
            Var::Deployment(f) => self
                .deployment
                .as_ref()
                .map(|d| Json::String(d.get(*f).to_string())),
        }
    }
}

/// A JSON value as text for a URL, header or body: strings raw, everything else as JSON.
pub fn json_text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

impl Template {
    /// Parses `text`; the error says what is wrong (unclosed braces, empty or bad name).
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in {text:?}"))?;
            let name = after[..close].trim();
            parts.push(Part::Var(parse_var(name)?));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Template {
            parts,
            source: text.to_string(),
        })
    }

    /// The template as written.
    pub fn display(&self) -> String {
        self.source.clone()
    }

    /// The references the template makes, for load-time checks.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Lit(_) => None,
        })
    }

    /// True when the template has no references (a plain string).
    pub fn is_literal(&self) -> bool {
        self.vars().next().is_none()
    }

    /// Whether it refers to `{{ deployment.* }}`.
    pub fn uses_deployment(&self) -> bool {
        self.vars().any(|v| matches!(v, Var::Deployment(_)))
    }

    /// Parses a string of a check other than a journey, where only `{{ deployment.* }}` may
    /// appear (`what` names the setting in the error).
    pub fn parse_deployment_only(text: &str, what: &str) -> Result<Template, String> {
        let t = Template::parse(text).map_err(|e| format!("{what}: {e}"))?;
        if let Some(v) = t.vars().find(|v| !matches!(v, Var::Deployment(_))) {
            let shown = match v {
                Var::Capture(n) => n.clone(),
                Var::Secret(n) => format!("secret.{n}"),
                Var::Deployment(_) => unreachable!(),
            };
            return Err(format!(
                "{what}: `{{{{ {shown} }}}}`: only {{{{ deployment.version }}}}, .id and .environment can be used here (captures and secret.* are a journey's)"
            ));
        }
        Ok(t)
    }

    /// The single reference when the template is exactly `{{ ref }}` (JSON bodies keep the
    /// captured value's type then).
    pub fn sole_var(&self) -> Option<&Var> {
        match self.parts.as_slice() {
            [Part::Var(v)] => Some(v),
            _ => None,
        }
    }

    pub fn render(&self, scope: &Scope) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => {
                    if let Some(val) = scope.lookup(v) {
                        out.push_str(&json_text(&val));
                    }
                }
            }
        }
        out
    }

    /// Renders for a JSON body: `"{{ ref }}"` alone takes the value's own JSON type.
    pub fn render_json(&self, scope: &Scope) -> Json {
        match self.sole_var() {
            Some(v) => scope.lookup(v).unwrap_or(Json::Null),
            None => Json::String(self.render(scope)),
        }
    }
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn parse_var(name: &str) -> Result<Var, String> {
    if name.is_empty() {
        return Err("empty `{{ }}` reference".to_string());
    }
    if let Some(secret) = name.strip_prefix("secret.") {
        return if valid_ident(secret) {
            Ok(Var::Secret(secret.to_string()))
        } else {
            Err(format!("bad secret reference `{{{{ {name} }}}}`"))
        };
    }
    if let Some(field) = name.strip_prefix("deployment.") {
        return match field {
            "version" => Ok(Var::Deployment(DeployField::Version)),
            "id" => Ok(Var::Deployment(DeployField::Id)),
            "environment" => Ok(Var::Deployment(DeployField::Environment)),
            _ => Err(format!(
                "`{{{{ {name} }}}}`: a deployment has `version`, `id` and `environment`"
            )),
        };
    }
    if valid_ident(name) {
        Ok(Var::Capture(name.to_string()))
    } else {
        Err(format!(
            "bad reference `{{{{ {name} }}}}` (a capture name, or secret.NAME)"
        ))
    }
}

/// A JSON body template: the TOML value with every string parsed as a template.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    Str(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
    Other(Json),
}

impl JsonTemplate {
    pub fn parse(v: &Json) -> Result<JsonTemplate, String> {
        Ok(match v {
            Json::String(s) => JsonTemplate::Str(Template::parse(s)?),
            Json::Array(a) => JsonTemplate::Array(
                a.iter()
                    .map(JsonTemplate::parse)
                    .collect::<Result<_, _>>()?,
            ),
            Json::Object(o) => JsonTemplate::Object(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), JsonTemplate::parse(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => JsonTemplate::Other(other.clone()),
        })
    }

    pub fn vars(&self) -> Vec<&Var> {
        match self {
            JsonTemplate::Str(t) => t.vars().collect(),
            JsonTemplate::Array(a) => a.iter().flat_map(|x| x.vars()).collect(),
            JsonTemplate::Object(o) => o.iter().flat_map(|(_, x)| x.vars()).collect(),
            JsonTemplate::Other(_) => Vec::new(),
        }
    }

    pub fn render(&self, scope: &Scope) -> Json {
        match self {
            JsonTemplate::Str(t) => t.render_json(scope),
            JsonTemplate::Array(a) => Json::Array(a.iter().map(|x| x.render(scope)).collect()),
            JsonTemplate::Object(o) => Json::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), x.render(scope)))
                    .collect(),
            ),
            JsonTemplate::Other(v) => v.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scope() -> Scope {
        let mut s = Scope::default();
        s.captures.insert("token".into(), json!("abc"));
        s.captures.insert("product".into(), json!(17));
        s.secrets.insert("pw".into(), "hunter22".into());
        s
    }

    #[test]
    fn renders_literals_captures_and_secrets() {
        let t = Template::parse("Bearer {{ token }} for {{product}} / {{ secret.pw }}").unwrap();
        assert_eq!(t.render(&scope()), "Bearer abc for 17 / hunter22");
        assert_eq!(
            t.vars().cloned().collect::<Vec<_>>(),
            vec![
                Var::Capture("token".into()),
                Var::Capture("product".into()),
                Var::Secret("pw".into())
            ]
        );
        assert!(Template::parse("plain").unwrap().is_literal());
    }

    #[test]
    fn a_sole_reference_keeps_its_json_type() {
        let body = JsonTemplate::parse(
            &json!({"id": "{{ product }}", "note": "item {{ product }}", "n": 2}),
        )
        .unwrap();
        assert_eq!(
            body.render(&scope()),
            json!({"id": 17, "note": "item 17", "n": 2})
        );
    }

    #[test]
    fn missing_values_render_empty() {
        let t = Template::parse("x={{ nothing }}").unwrap();
        assert_eq!(t.render(&scope()), "x=");
    }

    #[test]
    fn bad_templates_are_rejected_with_a_reason() {
        assert!(
            Template::parse("{{ token")
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(Template::parse("{{ }}").unwrap_err().contains("empty"));
        assert!(
            Template::parse("{{ a b }}")
                .unwrap_err()
                .contains("bad reference")
        );
        assert!(
            Template::parse("{{ secret. }}")
                .unwrap_err()
                .contains("secret")
        );
        assert!(
            Template::parse("{{ deployment.name }}")
                .unwrap_err()
                .contains("`version`, `id` and `environment`")
        );
    }

    #[test]
    fn deployment_variables_render_from_the_scope_and_empty_without_one() {
        let t = Template::parse(
            "/v/{{ deployment.version }}/{{deployment.environment}}#{{ deployment.id }}",
        )
        .unwrap();
        assert!(t.uses_deployment());
        let mut s = scope();
        assert_eq!(t.render(&s), "/v//#");
        s.deployment = Some(Arc::new(DeploymentVars {
            id: "d1".into(),
            version: "2.4.1".into(),
            environment: "prod".into(),
        }));
        assert_eq!(t.render(&s), "/v/2.4.1/prod#d1");
        assert!(!Template::parse("{{ token }}").unwrap().uses_deployment());
    }

    #[test]
    fn other_checks_accept_only_deployment_variables() {
        assert!(Template::parse_deployment_only("https://x/{{ deployment.id }}", "url").is_ok());
        let e = Template::parse_deployment_only("https://x/{{ token }}", "url").unwrap_err();
        assert!(e.starts_with("url: `{{ token }}`: only"), "{e}");
        let e = Template::parse_deployment_only("{{ secret.pw }}", "headers.x").unwrap_err();
        assert!(e.contains("secret.pw"), "{e}");
    }

    #[tokio::test]
    async fn the_current_deployment_is_scoped_to_one_run() {
        assert_eq!(current(), None);
        let vars = Arc::new(DeploymentVars::sample());
        let seen = with_deployment(Some(vars.clone()), async { current() }).await;
        assert_eq!(seen, Some(vars));
        assert_eq!(current(), None);
    }
}
