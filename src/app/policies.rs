//! Policies from files: the shipped ones plus every `*.toml` in the policies folder. A bad file
//! is reported with its problems (file, line, column, field), all files at once.

use crate::domain::policy::{
    file_problem, parse_policy, Policy, PolicyErrors, PolicyProblem, PolicySet,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Read, parse and validate one policy file.
pub fn load_policy_file(path: &Path) -> Result<Policy, PolicyErrors> {
    let file = path.display().to_string();
    let src = read_source(path, &file)?;
    parse_policy(&src, &file)
}

fn read_source(path: &Path, file: &str) -> Result<String, PolicyErrors> {
    std::fs::read_to_string(path).map_err(|e| file_problem(file, format!("cannot read: {e}")))
}

/// Load every `*.toml` file in `dir`. Reports the problems of all files; two files with the
/// same policy name are an error.
pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyErrors> {
    let mut set = PolicySet::default();
    let mut origin = BTreeMap::new();
    let mut problems = Vec::new();
    for path in toml_files(dir)? {
        let file = path.display().to_string();
        let added =
            read_source(&path, &file).and_then(|src| set.add_source(&src, &file, &mut origin));
        if let Err(e) = added {
            problems.extend(e.0);
        }
    }
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(PolicyErrors(problems))
    }
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyErrors> {
    let file = dir.display().to_string();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| file_problem(&file, format!("cannot read directory: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Shipped policies plus the good files in `dir` (which may not exist). A bad file is named
/// with its problems in a warning and left out, so it blocks nothing that does not use its
/// policy: a loan under it is parked for a person, and `policy check` shows every problem.
/// Two files with one name still refuse the folder: which of them rules would be a guess.
pub fn load_policies(dir: &Path) -> Result<PolicySet, PolicyErrors> {
    let mut set = PolicySet::builtin();
    if !dir.is_dir() {
        return Ok(set);
    }
    let (local, bad) = load_dir_lenient(dir)?;
    for p in &bad {
        tracing::warn!(file = %p.file, "{p}; this policy file is left out until it is fixed");
    }
    for name in local.names() {
        set.insert(local.get(name).expect("listed").clone());
    }
    Ok(set)
}

/// Like [`load_dir`], but a file that does not parse or check is left out and its problems
/// returned beside the set.
fn load_dir_lenient(dir: &Path) -> Result<(PolicySet, Vec<PolicyProblem>), PolicyErrors> {
    let mut set = PolicySet::default();
    let mut origin = BTreeMap::new();
    let mut bad = Vec::new();
    for path in toml_files(dir)? {
        let file = path.display().to_string();
        let Ok(src) = read_source(&path, &file).map_err(|e| bad.extend(e.0)) else {
            continue;
        };
        match parse_policy(&src, &file) {
            Ok(_) => set.add_source(&src, &file, &mut origin)?,
            Err(e) => bad.extend(e.0),
        }
    }
    Ok((set, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy::BUILTIN;

    #[test]
    fn load_dir_reads_all_and_rejects_duplicate_names() {
        let dir = tempfile::tempdir().unwrap();
        for (file, src) in BUILTIN {
            let name = Path::new(file).file_name().unwrap();
            std::fs::write(dir.path().join(name), src).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "not a policy").unwrap();
        let set = load_dir(dir.path()).unwrap();
        assert_eq!(set, PolicySet::builtin());
        let path = dir.path().join("z_copy.toml");
        std::fs::write(&path, format!("\n{}", BUILTIN[0].1)).unwrap();
        let err = load_dir(dir.path()).unwrap_err().0;
        assert_eq!(err.len(), 1);
        assert_eq!((err[0].field.as_str(), err[0].line), ("name", 9));
        assert!(err[0].file.ends_with("z_copy.toml"));
        assert!(load_policy_file(&dir.path().join("missing.toml")).is_err());
    }

    #[test]
    fn a_bad_file_is_left_out_and_blocks_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let good = BUILTIN[1].1.replace("name = \"gentle\"", "name = \"kind\"");
        std::fs::write(dir.path().join("kind.toml"), good).unwrap();
        std::fs::write(
            dir.path().join("broken.toml"),
            "name = \"broken\"\nversion = \"x\"\n",
        )
        .unwrap();
        let set = load_policies(dir.path()).unwrap();
        assert!(set.get("kind").is_some() && set.get("standard").is_some());
        assert!(set.get("broken").is_none());
        let (_, bad) = load_dir_lenient(dir.path()).unwrap();
        assert!(
            bad.iter().all(|p| p.file.ends_with("broken.toml")) && !bad.is_empty(),
            "{bad:?}"
        );
    }
}
