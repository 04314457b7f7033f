//! Notice text from template files, one per notice kind and locale.
//!
//! The shipped files (`templates/{locale}/{kind}.txt`) are compiled in, so the daemon needs
//! no files on disk; an override directory with the same layout lets a lender reword a
//! notice without a rebuild. Line 1 of a file is `Subject: ...` (email only), the rest the
//! body (SMS text and email body). Every file is checked when loaded: it must compile, use
//! no unknown variable, and show the lender, amount, due date and masked account, which
//! scheme rules require of an advance notice.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;
use std::collections::HashMap;

/// Notice kinds, as `notify::NoticeKind::as_str` spells them.
pub const KINDS: [&str; 6] = ["pre_due", "overdue", "paid", "partial", "failed", "rebind"];

/// Locales shipped with the binary.
pub const LOCALES: [&str; 2] = ["en", "zh-CN"];

/// Used when a borrower's locale has no template.
pub const FALLBACK_LOCALE: &str = "en";

macro_rules! builtin {
    ($($locale:literal / $kind:literal),* $(,)?) => {
        [$(($locale, $kind, include_str!(concat!("../../../templates/", $locale, "/", $kind, ".txt")))),*]
    };
}

const BUILTIN: [(&str, &str, &str); 12] = builtin![
    "en" / "pre_due",
    "en" / "overdue",
    "en" / "paid",
    "en" / "partial",
    "en" / "failed",
    "en" / "rebind",
    "zh-CN" / "pre_due",
    "zh-CN" / "overdue",
    "zh-CN" / "paid",
    "zh-CN" / "partial",
    "zh-CN" / "failed",
    "zh-CN" / "rebind",
];

/// What a notice says. Amounts and dates come preformatted so templates never do money
/// arithmetic or date formatting.
#[derive(Debug, Clone, Serialize)]
pub struct NoticeContext {
    pub lender: String,
    pub borrower_name: String,
    pub loan_id: String,
    pub installment: Option<u32>,
    pub amount: String,
    pub currency: String,
    pub due_date: String,
    pub account_masked: String,
    pub remaining: String,
}

impl NoticeContext {
    /// Distinctive values used to check that a template shows the required facts.
    fn sample() -> Self {
        NoticeContext {
            lender: "Sample Lender Ltd".into(),
            borrower_name: "Sample Borrower".into(),
            loan_id: "L-SAMPLE-1".into(),
            installment: Some(3),
            amount: "98765.43".into(),
            currency: "CNY".into(),
            due_date: "2099-12-31".into(),
            account_masked: "6222 **** **** 9876".into(),
            remaining: "12345.67".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: the body never shows {field}")]
    Missing { file: String, field: &'static str },
    #[error("{file}: unknown notice kind {kind:?} (known: {})", KINDS.join(", "))]
    UnknownKind { file: String, kind: String },
}

/// All notice templates, ready to render.
pub struct Templates {
    env: Environment<'static>,
    /// (locale, kind) → the file it came from, for error messages.
    files: HashMap<(String, String), String>,
}

fn name(locale: &str, kind: &str, part: &str) -> String {
    format!("{locale}/{kind}.{part}")
}

/// Turn a minijinja error into one that names the file and the line within it.
fn syntax(file: &str, first_line: usize, e: minijinja::Error) -> TemplateError {
    let message = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    TemplateError::Syntax {
        file: file.to_string(),
        line: first_line + e.line().unwrap_or(1) - 1,
        message,
    }
}

/// Split a file into its subject (line 1, `Subject: ...`) and body (line 2 on).
fn split_subject(file: &str, text: &str) -> Result<(String, String), TemplateError> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let subject = first
        .trim_end_matches('\r')
        .strip_prefix("Subject:")
        .ok_or_else(|| TemplateError::Syntax {
            file: file.to_string(),
            line: 1,
            message: "the first line must be `Subject: ...`".into(),
        })?;
    Ok((subject.trim().to_string(), rest.trim_end().to_string()))
}

impl Templates {
    fn empty() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        Templates {
            env,
            files: HashMap::new(),
        }
    }

    /// The templates shipped in the binary.
    pub fn builtin() -> Self {
        let mut t = Templates::empty();
        for (locale, kind, text) in BUILTIN {
            let file = format!("templates/{locale}/{kind}.txt");
            t.add(&file, locale, kind, text)
                .unwrap_or_else(|e| panic!("shipped template is broken: {e}"));
        }
        t
    }

    /// Add (or replace) the template of `kind` in `locale` from `text` (`file` names it in
    /// errors); it is checked at once for the facts a notice must state.
    pub fn add(
        &mut self,
        file: &str,
        locale: &str,
        kind: &str,
        text: &str,
    ) -> Result<(), TemplateError> {
        let (subject, body) = split_subject(file, text)?;
        self.env
            .add_template_owned(name(locale, kind, "subject"), subject)
            .map_err(|e| syntax(file, 1, e))?;
        self.env
            .add_template_owned(name(locale, kind, "body"), body)
            .map_err(|e| syntax(file, 2, e))?;
        self.files
            .insert((locale.to_string(), kind.to_string()), file.to_string());
        self.check(file, locale, kind)
    }

    /// Render with sample values: catches unknown variables now rather than at send time,
    /// and proves the body shows the facts a notice must state.
    fn check(&self, file: &str, locale: &str, kind: &str) -> Result<(), TemplateError> {
        let ctx = NoticeContext::sample();
        let (_, body) = self.render_exact(locale, kind, &ctx)?;
        let required = [
            ("lender", &ctx.lender),
            ("amount", &ctx.amount),
            ("due_date", &ctx.due_date),
            ("account_masked", &ctx.account_masked),
        ];
        match required.iter().find(|(_, v)| !body.contains(v.as_str())) {
            Some((field, _)) => Err(TemplateError::Missing {
                file: file.to_string(),
                field,
            }),
            None => Ok(()),
        }
    }

    /// The locales that have templates: the shipped ones and any an override dir added.
    pub fn locales(&self) -> Vec<String> {
        let mut v: Vec<String> = self.files.keys().map(|(l, _)| l.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The locale actually used for `locale`: an exact match, then one that differs only in
    /// case or `_` for `-` (`zh_cn`), then [`FALLBACK_LOCALE`].
    fn resolve(&self, kind: &str, locale: &str) -> String {
        let wanted = locale.replace('_', "-");
        self.files
            .keys()
            .filter(|(_, k)| k == kind)
            .map(|(l, _)| l)
            .find(|l| l.as_str() == wanted || l.eq_ignore_ascii_case(&wanted))
            .cloned()
            .unwrap_or_else(|| FALLBACK_LOCALE.to_string())
    }

    /// Subject and body of a notice of `kind` in `locale` (falling back to English).
    pub fn render(
        &self,
        kind: &str,
        locale: &str,
        ctx: &NoticeContext,
    ) -> Result<(String, String), TemplateError> {
        if !KINDS.contains(&kind) {
            return Err(TemplateError::UnknownKind {
                file: "(render)".into(),
                kind: kind.to_string(),
            });
        }
        self.render_exact(&self.resolve(kind, locale), kind, ctx)
    }

    fn render_exact(
        &self,
        locale: &str,
        kind: &str,
        ctx: &NoticeContext,
    ) -> Result<(String, String), TemplateError> {
        let file = self
            .files
            .get(&(locale.to_string(), kind.to_string()))
            .map(String::as_str)
            .unwrap_or("(missing)");
        let part = |p: &str, first_line: usize| {
            self.env
                .get_template(&name(locale, kind, p))
                .and_then(|t| t.render(ctx))
                .map_err(|e| syntax(file, first_line, e))
        };
        Ok((part("subject", 1)?, part("body", 2)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> NoticeContext {
        NoticeContext {
            lender: "Acme Credit".into(),
            borrower_name: "Li Lei".into(),
            loan_id: "L-1".into(),
            installment: Some(2),
            amount: "1250.00".into(),
            currency: "CNY".into(),
            due_date: "2026-03-15".into(),
            account_masked: "6222 **** **** 1234".into(),
            remaining: "250.00".into(),
        }
    }

    #[test]
    fn all_twelve_shipped_files_state_the_required_facts() {
        let t = Templates::builtin();
        let c = ctx();
        for locale in LOCALES {
            for kind in KINDS {
                let (subject, body) = t.render(kind, locale, &c).unwrap();
                for fact in [&c.lender, &c.amount, &c.due_date, &c.account_masked] {
                    assert!(
                        body.contains(fact.as_str()),
                        "{locale}/{kind} lacks {fact}: {body}"
                    );
                }
                assert!(
                    !subject.is_empty() && !subject.contains('\n'),
                    "{locale}/{kind}"
                );
                assert!(
                    !body.contains("{{") && !body.contains("{%"),
                    "{locale}/{kind}"
                );
            }
        }
        assert_eq!(t.locales(), vec!["en".to_string(), "zh-CN".to_string()]);
    }

    #[test]
    fn partial_states_remaining_and_installment_is_optional() {
        let t = Templates::builtin();
        let mut c = ctx();
        let (_, body) = t.render("partial", "zh-CN", &c).unwrap();
        assert!(body.contains("第2期") && body.contains("250.00"), "{body}");
        c.installment = None;
        let (_, body) = t.render("partial", "en", &c).unwrap();
        assert!(
            !body.contains("installment") && body.contains("250.00 CNY remains"),
            "{body}"
        );
    }

    #[test]
    fn locale_fallback() {
        let t = Templates::builtin();
        let en = t.render("paid", "en", &ctx()).unwrap();
        assert_eq!(t.render("paid", "fr-FR", &ctx()).unwrap(), en);
        assert_eq!(t.render("paid", "", &ctx()).unwrap(), en);
        let zh = t.render("paid", "zh-CN", &ctx()).unwrap();
        assert_eq!(t.render("paid", "zh_cn", &ctx()).unwrap(), zh);
        assert!(zh.0.contains("扣款成功"));
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let e = Templates::builtin()
            .render("hello", "en", &ctx())
            .unwrap_err();
        assert!(matches!(e, TemplateError::UnknownKind { .. }));
    }
}
