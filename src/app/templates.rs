//! Notice templates from files: `{dir}/{locale}/{kind}.txt` replacing or adding to the
//! shipped ones (`notices.templates` in the config).

use crate::domain::notice::templates::{TemplateError, Templates, KINDS};
use std::path::Path;

/// The shipped templates, with every `{dir}/{locale}/{kind}.txt` replacing or adding
/// to them. A `.txt` file whose name is not a notice kind is an error, so a typo never
/// silently leaves the shipped text in place.
pub fn load_dir(dir: impl AsRef<Path>) -> Result<Templates, TemplateError> {
    let mut t = Templates::builtin();
    for locale_dir in read_dir(dir.as_ref())? {
        if !locale_dir.is_dir() {
            continue;
        }
        let locale = file_name(&locale_dir);
        for path in read_dir(&locale_dir)? {
            if path.extension().is_some_and(|e| e == "txt") {
                load_file(&mut t, &path, &locale)?;
            }
        }
    }
    Ok(t)
}

fn load_file(t: &mut Templates, path: &Path, locale: &str) -> Result<(), TemplateError> {
    let file = path.display().to_string();
    let kind = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !KINDS.contains(&kind.as_str()) {
        return Err(TemplateError::UnknownKind { file, kind });
    }
    let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Io {
        file: file.clone(),
        source,
    })?;
    t.add(&file, locale, &kind, &text)
}

fn read_dir(dir: &Path) -> Result<Vec<std::path::PathBuf>, TemplateError> {
    let io = |source| TemplateError::Io {
        file: dir.display().to_string(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        paths.push(entry.map_err(io)?.path());
    }
    paths.sort();
    Ok(paths)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notice::templates::NoticeContext;

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

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn override_dir_replaces_and_adds() {
        let d = tempfile::tempdir().unwrap();
        let text = "Subject: {{ lender }} paid\nPAID {{ lender }} {{ amount }} {{ due_date }} {{ account_masked }}\n";
        write(d.path(), "en/paid.txt", text);
        write(d.path(), "fr/paid.txt", text);
        write(d.path(), "README.md", "not a template");
        let t = load_dir(d.path()).unwrap();
        let (s, b) = t.render("paid", "en", &ctx()).unwrap();
        assert_eq!(s, "Acme Credit paid");
        assert_eq!(b, "PAID Acme Credit 1250.00 2026-03-15 6222 **** **** 1234");
        assert!(t
            .render("paid", "fr", &ctx())
            .unwrap()
            .1
            .starts_with("PAID"));
        // fr has no overdue file: English is used.
        assert!(t
            .render("overdue", "fr", &ctx())
            .unwrap()
            .1
            .contains("overdue"));
        // untouched files keep the shipped text
        assert!(t
            .render("paid", "zh-CN", &ctx())
            .unwrap()
            .1
            .contains("感谢"));
    }

    fn load_err(rel: &str, text: &str) -> String {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), rel, text);
        match load_dir(d.path()) {
            Ok(_) => panic!("{rel} should not load"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = load_err(
            "en/paid.txt",
            "Subject: x\n{{ lender }} {{ amount }}\n{{ due_date }} {% if %}\n",
        );
        assert!(e.contains("en/paid.txt:3:"), "{e}");
        let e = load_err("en/paid.txt", "Subject: {{ lender \nbody");
        assert!(e.contains("en/paid.txt:1:"), "{e}");
        let e = load_err("en/paid.txt", "no subject line\nbody");
        assert!(
            e.contains("en/paid.txt:1: the first line must be `Subject: ...`"),
            "{e}"
        );
        let e = load_err(
            "en/paid.txt",
            "Subject: x\n{{ lender }} {{ amount }}\n{{ due_date }} {{ acount_masked }}\n",
        );
        assert!(
            e.contains("en/paid.txt:3:") && e.contains("undefined"),
            "{e}"
        );
    }

    #[test]
    fn missing_facts_and_unknown_kinds_are_refused() {
        let e = load_err(
            "en/paid.txt",
            "Subject: x\n{{ lender }} {{ amount }} {{ due_date }}\n",
        );
        assert!(
            e.contains("en/paid.txt: the body never shows account_masked"),
            "{e}"
        );
        let e = load_err("en/payd.txt", "Subject: x\nbody\n");
        assert!(e.contains("payd.txt: unknown notice kind \"payd\""), "{e}");
    }
}
