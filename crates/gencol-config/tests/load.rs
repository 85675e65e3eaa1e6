//! Loading: locations, `${env:...}` through the whole tree, files and merging.

use std::path::Path;

use gencol_config::{Loc, Node, load_files, load_str};

fn env(name: &str) -> Option<String> {
    match name {
        "GENCOL_TOKEN" => Some("s3cr3t-t0ken".into()),
        "PORT" => Some("4318".into()),
        "DIGITS" => Some("123456".into()),
        _ => None,
    }
}

fn at(file: &str, line: u32, column: u32) -> Loc {
    Loc { file: file.into(), line, column }
}

const NESTED: &str = "\
receivers:
  otlp:
    endpoint: 127.0.0.1:4318
    auth:
      bearer_tokens: [a, b]
exporters:
  debug:
";

#[test]
fn nested_keys_and_values_have_their_place() {
    let root = load_str("p.yaml", NESTED, &|_| None).unwrap();
    assert_eq!(root.loc, at("p.yaml", 1, 1));
    assert_eq!(root.value.key_loc("receivers"), Some(&at("p.yaml", 1, 1)));
    assert_eq!(root.value.key_loc("exporters"), Some(&at("p.yaml", 6, 1)));
    let otlp = root.value.get("receivers").unwrap().value.get("otlp").unwrap();
    assert_eq!(root.value.get("receivers").unwrap().value.key_loc("otlp"), Some(&at("p.yaml", 2, 3)));
    assert_eq!(otlp.value.key_loc("endpoint"), Some(&at("p.yaml", 3, 5)));
    let endpoint = otlp.value.get("endpoint").unwrap();
    assert_eq!(endpoint.value, Node::String("127.0.0.1:4318".into()));
    assert_eq!(endpoint.loc, at("p.yaml", 3, 15));
    let tokens = otlp.value.get("auth").unwrap().value.get("bearer_tokens").unwrap();
    let items = tokens.value.as_seq().unwrap();
    assert_eq!(items[0].loc, at("p.yaml", 5, 23));
    assert_eq!(items[1].loc, at("p.yaml", 5, 26));
    assert_eq!(items[1].value.as_str(), Some("b"));
    // `debug:` with nothing after it is null, located at the key's line.
    let debug = root.value.get("exporters").unwrap().value.get("debug").unwrap();
    assert_eq!(debug.value, Node::Null);
    assert_eq!(debug.loc.line, 7);
}

#[test]
fn scalars_follow_yaml_1_2() {
    let root =
        load_str("s.yaml", "a: 1\nb: 1.5\nc: true\nd: ~\ne: yes\nf: \"2\"\ng: 007\nh: 0x10\n", &|_| None).unwrap();
    let v = |k: &str| root.value.get(k).unwrap().value.clone();
    assert_eq!(v("a"), Node::Int(1));
    assert_eq!(v("b"), Node::Float(1.5));
    assert_eq!(v("c"), Node::Bool(true));
    assert_eq!(v("d"), Node::Null);
    assert_eq!(v("e"), Node::String("yes".into()));
    assert_eq!(v("f"), Node::String("2".into()));
    assert_eq!(v("g"), Node::String("007".into()));
    assert_eq!(v("h"), Node::Int(16));
    assert_eq!(root.value.kind(), "map");
}

#[test]
fn empty_file_is_an_empty_map() {
    for text in ["", "\n\n", "# nothing here\n", "---\n"] {
        let root = load_str("e.yaml", text, &|_| None).unwrap();
        assert_eq!(root.value, Node::Map(vec![]), "{text:?}");
        assert_eq!(root.loc, at("e.yaml", 1, 1));
    }
}

#[test]
fn env_substitution_in_the_tree() {
    let text = "\
a: ${env:PORT}
b: \"${env:PORT}\"
c: port ${env:PORT}
d: ${env:MISSING:-5s}
e: $${env:GENCOL_TOKEN}
f: [\"Bearer ${env:GENCOL_TOKEN}\"]
${env:PORT}: key stays
";
    let root = load_str("env.yaml", text, &env).unwrap();
    let v = |k: &str| root.value.get(k).unwrap().value.clone();
    assert_eq!(v("a"), Node::Int(4318));
    // A whole reference is typed whatever the quoting: the tree cannot see quotes.
    assert_eq!(v("b"), Node::Int(4318));
    assert_eq!(v("c"), Node::String("port 4318".into()));
    assert_eq!(v("d"), Node::String("5s".into()));
    assert_eq!(v("e"), Node::String("${env:GENCOL_TOKEN}".into()));
    assert_eq!(v("f").as_seq().unwrap()[0].value, Node::String("Bearer s3cr3t-t0ken".into()));
    assert!(root.value.get("${env:PORT}").is_some());
    // The substituted value keeps the place of the reference.
    assert_eq!(root.value.get("a").unwrap().loc, at("env.yaml", 1, 4));
}

#[test]
fn missing_variables_are_all_reported_without_values() {
    let text = "token: ${env:GENCOL_TOKEN}\nx: ${env:UNSET_ONE}\nlist:\n  - ok\n  - ${env:UNSET_TWO}\n";
    let diags = load_str("m.yaml", text, &env).unwrap_err();
    let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "m.yaml:2:4: environment variable UNSET_ONE is not set: set UNSET_ONE or write ${env:UNSET_ONE:-default}",
            "m.yaml:5:5: environment variable UNSET_TWO is not set: set UNSET_TWO or write ${env:UNSET_TWO:-default}",
        ]
    );
    assert!(!diags.to_string().contains("s3cr3t"));
}

#[test]
fn files_merge_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("base.yaml");
    let second = dir.path().join("override.yaml");
    std::fs::write(
        &first,
        "receivers:\n  otlp:\n    endpoint: 127.0.0.1:4318\n    max_request_body_size: 1MiB\nexporters:\n  debug: {verbosity: basic}\n",
    )
    .unwrap();
    std::fs::write(
        &second,
        "receivers:\n  otlp:\n    endpoint: 0.0.0.0:${env:PORT}\nexporters:\n  debug: [replaced]\n",
    )
    .unwrap();
    let root = load_files(&[first.as_path(), second.as_path()], &env).unwrap();
    let otlp = root.value.get("receivers").unwrap().value.get("otlp").unwrap();
    let second_name = second.display().to_string();
    let first_name = first.display().to_string();
    // Later file wins for the scalar and its place is the later file's.
    let endpoint = otlp.value.get("endpoint").unwrap();
    assert_eq!(endpoint.value, Node::String("0.0.0.0:4318".into()));
    assert_eq!(endpoint.loc, at(&second_name, 3, 15));
    // Keys only the earlier file has survive, with their own place.
    let size = otlp.value.get("max_request_body_size").unwrap();
    assert_eq!(size.value, Node::String("1MiB".into()));
    assert_eq!(size.loc, at(&first_name, 4, 28));
    // A list replaces a map wholesale.
    let debug = root.value.get("exporters").unwrap().value.get("debug").unwrap();
    assert_eq!(debug.value.as_seq().map(<[_]>::len), Some(1));
    assert_eq!(debug.loc.file.as_ref(), second_name);
}

#[test]
fn all_files_report_all_problems() {
    let dir = tempfile::tempdir().unwrap();
    let env_problem = dir.path().join("a.yaml");
    let yaml_problem = dir.path().join("b.yaml");
    let missing = dir.path().join("missing.yaml");
    std::fs::write(&env_problem, "token: ${env:UNSET_TOKEN}\n").unwrap();
    std::fs::write(&yaml_problem, "a: 1\nb: [1, 2\n").unwrap();
    let paths: [&Path; 3] = [&env_problem, &yaml_problem, &missing];
    let diags = load_files(&paths, &env).unwrap_err();
    let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].starts_with(&format!("{}:1:8: environment variable UNSET_TOKEN", env_problem.display())));
    assert!(lines[1].starts_with(&format!("{}:2:4: invalid YAML", yaml_problem.display())), "{}", lines[1]);
    assert!(lines[2].starts_with(&format!("{}: cannot read config file", missing.display())), "{}", lines[2]);
}

#[test]
fn no_files_is_an_empty_config() {
    let root = load_files(&[], &env).unwrap();
    assert_eq!(root.value, Node::Map(vec![]));
}
