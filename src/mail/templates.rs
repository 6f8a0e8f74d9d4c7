//! Mail templates: a subject, a text and an HTML body per kind, compiled in
//! and replaceable by files. HTML values are escaped by minijinja.

use std::path::Path;

use anyhow::Context;
use minijinja::Environment;

use super::Kind;

const PARTS: [&str; 3] = ["subject", "txt", "html"];

macro_rules! compiled_in {
    ($($kind:literal),*) => {
        &[$(
            ($kind, "subject", include_str!(concat!("templates/", $kind, ".subject"))),
            ($kind, "txt", include_str!(concat!("templates/", $kind, ".txt"))),
            ($kind, "html", include_str!(concat!("templates/", $kind, ".html"))),
        )*]
    };
}

const DEFAULTS: &[(&str, &str, &str)] = compiled_in!(
    "verify_email",
    "password_reset",
    "email_change",
    "email_changed",
    "password_changed"
);

pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// The compiled-in templates, each replaced by `<dir>/<kind>.<part>` when
    /// that file exists. A template that does not compile stops the start.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        for (kind, part, source) in DEFAULTS {
            let name = format!("{kind}.{part}");
            let source = match dir.map(|d| d.join(&name)).filter(|p| p.is_file()) {
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
                None => source.to_string(),
            };
            env.add_template_owned(name.clone(), source)
                .with_context(|| format!("mail template {name}"))?;
        }
        Ok(Templates { env })
    }

    pub fn render(&self, kind: Kind, values: &serde_json::Value) -> anyhow::Result<Rendered> {
        let [subject, text, html] = PARTS.map(|part| {
            self.env
                .get_template(&format!("{}.{part}", kind.name()))
                .and_then(|t| t.render(values))
                .with_context(|| format!("rendering {}.{part}", kind.name()))
        });
        Ok(Rendered {
            // A header is one line.
            subject: subject?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
            text: text?,
            html: html?,
        })
    }
}
