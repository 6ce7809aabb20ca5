use super::*;

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn definitions_come_from_a_jobs_file_one_job_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = write(
        dir.path(),
        "jobs.toml",
        "[[jobs]]\nname = \"a\"\nschedule = \"@every 5s\"\ncommand = \"true\"\nretries = 2\n\n[[jobs]]\nname = \"b\"\nschedule = \"* * * * *\"\ncommand = \"x\"\n",
    );
    let got = definitions_from_file(&jobs).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(name_of(&got[0]).unwrap(), "a");
    assert_eq!(got[0]["retries"], 2);
    assert_eq!(name_of(&got[1]).unwrap(), "b");

    let one = write(
        dir.path(),
        "one.toml",
        "name = \"c\"\nschedule = \"@every 1s\"\ncommand = \"y\"\n",
    );
    assert_eq!(
        name_of(&definitions_from_file(&one).unwrap()[0]).unwrap(),
        "c"
    );
    let json = write(
        dir.path(),
        "d.json",
        r#"{"name": "d", "schedule": "@every 1s", "command": "z"}"#,
    );
    assert_eq!(
        name_of(&definitions_from_file(&json).unwrap()[0]).unwrap(),
        "d"
    );
    let list = write(dir.path(), "list.txt", r#"[{"name": "e"}, {"name": "f"}]"#);
    assert_eq!(definitions_from_file(&list).unwrap().len(), 2);
}

#[test]
fn bad_files_and_addresses_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.json", "[1, 2]");
    let e = definitions_from_file(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.json") && e.contains("entry 1"), "{e}");
    let bad = write(dir.path(), "bad.toml", "name = ");
    let e = definitions_from_file(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.toml"), "{e}");
    let e = definitions_from_file(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.toml"), "{e}");
    let nameless = serde_json::json!({"schedule": "@every 1s"});
    let e = name_of(nameless.as_object().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("`name`"), "{e}");
    assert!(Client::new("not an address", None).is_err());
    assert!(Client::new("127.0.0.1:7947", None).is_ok());
    assert!(Client::new("http://[::1]:7947", None).is_ok());
}

#[test]
fn job_names_are_escaped_in_paths() {
    let c = Client::new("127.0.0.1:7947", None).unwrap();
    assert_eq!(
        c.url(&["v1", "jobs", "a/b c?"]).as_str(),
        "http://127.0.0.1:7947/v1/jobs/a%2Fb%20c%3F"
    );
}

#[tokio::test]
async fn an_unreachable_api_is_named_with_its_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let e = Client::new(&addr, None)
        .unwrap()
        .members()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&addr) && e.contains("refused"), "{e}");
}
