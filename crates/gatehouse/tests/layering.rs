//! The crates' "must never" (README, crate table) as checks on their
//! manifests and sources, so a dependency or a query in the wrong place
//! fails CI instead of waiting for a reviewer to notice.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every workspace crate with the names of its normal (non-dev),
/// non-optional dependencies. Optional ones are behind features that no
/// production build enables (the fake chain's web server, the simulator);
/// CI builds the binary without them.
fn manifests() -> BTreeMap<String, BTreeSet<String>> {
    let mut crates = BTreeMap::new();
    for entry in fs::read_dir(workspace().join("crates")).expect("crates/ is readable") {
        let manifest = entry.expect("a crates/ entry").path().join("Cargo.toml");
        let Ok(text) = fs::read_to_string(&manifest) else {
            continue;
        };
        let doc: toml::Table = text
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        let name = doc["package"]["name"]
            .as_str()
            .expect("package.name")
            .to_owned();
        let deps = doc
            .get("dependencies")
            .and_then(toml::Value::as_table)
            .map(|t| {
                t.iter()
                    .filter(|(_, spec)| {
                        spec.get("optional").and_then(toml::Value::as_bool) != Some(true)
                    })
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default();
        crates.insert(name, deps);
    }
    crates
}

/// `krate`'s dependencies, followed through the workspace's own crates.
fn closure(all: &BTreeMap<String, BTreeSet<String>>, krate: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![krate.to_owned()];
    while let Some(next) = todo.pop() {
        for dep in all.get(&next).into_iter().flatten() {
            if seen.insert(dep.clone()) && all.contains_key(dep) {
                todo.push(dep.clone());
            }
        }
    }
    seen
}

#[test]
fn no_crate_depends_on_what_it_must_never_touch() {
    let all = manifests();
    let sql = ["store", "tokio-postgres", "deadpool-postgres", "postgres"];
    let nats = ["bus", "async-nats"];
    let twilight = ["twilight-gateway", "twilight-http", "twilight-model"];
    // (crate, forbidden anywhere below it, why)
    let rules: &[(&str, Vec<&str>, &str)] = &[
        (
            "wire",
            [&sql[..], &nats, &twilight].concat(),
            "the contract depends on Twilight, NATS or SQL",
        ),
        (
            "bus",
            [&sql[..], &twilight, &["domain"]].concat(),
            "the bus knows what an event means",
        ),
        (
            "store",
            [&nats[..], &twilight, &["clap", "axum"]].concat(),
            "the database layer talks to NATS, Discord or a front end",
        ),
        (
            "eligibility",
            [&sql[..], &twilight, &["wire"]].concat(),
            "eligibility knows about Discord or SQL",
        ),
        (
            "domain",
            [&nats[..], &twilight, &["clap", "axum"]].concat(),
            "the domain parses command lines or HTTP, or holds a socket",
        ),
        ("gateway", sql.to_vec(), "the gateway touches PostgreSQL"),
        ("worker", vec!["clap"], "the worker parses a command line"),
        (
            "api",
            [&twilight[..], &["worker", "gateway", "clap"]].concat(),
            "the API talks to Discord or runs another service's work",
        ),
    ];
    let mut broken = Vec::new();
    for (krate, forbidden, why) in rules {
        let Some(_) = all.get(*krate) else {
            // Not every crate exists yet (`bus` arrives with its issue).
            continue;
        };
        let below = closure(&all, krate);
        for dep in forbidden {
            if below.contains(*dep) {
                broken.push(format!("{krate} depends on {dep}: {why}"));
            }
        }
    }
    // The simulator, the fake chain and the test kit never reach production
    // through a normal dependency (the binary's are behind its `sim`
    // feature, checked by building it without default features in CI).
    for (krate, deps) in &all {
        for dep in ["testkit", "discord-sim"] {
            // The test kit is test support: it drives the simulator.
            if deps.contains(dep) && krate != "gatehouse" && krate != "testkit" {
                broken.push(format!("{krate} has a normal dependency on {dep}"));
            }
        }
        if krate != "gatehouse" && deps.contains("clap") {
            broken.push(format!(
                "{krate} depends on clap: only the binary parses command lines"
            ));
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

/// Statements that only SQL has, in upper case as this codebase writes it.
fn looks_like_sql(text: &str) -> Option<&'static str> {
    const PLAIN: [&str; 7] = [
        "INSERT INTO",
        "DELETE FROM",
        "CREATE TABLE",
        "ALTER TABLE",
        "DROP TABLE",
        "ON CONFLICT",
        "FOR NO KEY UPDATE",
    ];
    if let Some(k) = PLAIN.iter().find(|k| text.contains(*k)) {
        return Some(k);
    }
    let from_follows = |keyword: &str| {
        text.match_indices(keyword).any(|(i, _)| {
            let window: String = text[i..].chars().take(400).collect();
            window.contains(" FROM ") || window.contains("\nFROM ") || window.contains(" SET ")
        })
    };
    if from_follows("SELECT ") {
        return Some("SELECT … FROM");
    }
    if from_follows("UPDATE ") {
        return Some("UPDATE … SET");
    }
    None
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn sql_lives_only_in_the_store() {
    let mut files = Vec::new();
    for entry in fs::read_dir(workspace().join("crates")).expect("crates/ is readable") {
        let krate = entry.expect("a crates/ entry").path();
        let name = krate.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // The store owns the SQL; the test kit creates and drops databases.
        if name == "store" || name == "testkit" {
            continue;
        }
        rust_files(&krate.join("src"), &mut files);
    }
    assert!(!files.is_empty(), "no sources found");
    let offenders: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let text = fs::read_to_string(f).ok()?;
            // Unit tests inside a source file are tests too.
            let code = text.split("#[cfg(test)]").next().unwrap_or(&text);
            looks_like_sql(code).map(|k| format!("{}: {k}", f.display()))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "SQL outside crates/store (move it into a repository):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_sql_detector_detects_sql() {
    assert!(looks_like_sql("tx.query(\"SELECT a, b\n FROM t\")").is_some());
    assert!(looks_like_sql("\"UPDATE profiles SET x = 1\"").is_some());
    assert!(looks_like_sql("INSERT INTO badges").is_some());
    assert!(looks_like_sql("let selector = SELECTOR; // selects from a list").is_none());
    assert!(looks_like_sql("update the role").is_none());
}
