//! The feature benchmarks' cutover configs (`bench/*.toml.tmpl`, rendered by
//! the side-by-side harness) stay valid: rendered here with placeholder
//! ports, each passes `cutover check` through the binary without lints.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cutover");

#[test]
fn every_bench_template_renders_to_a_valid_config() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("bench")).expect("bench/") {
        let path = entry.expect("entry").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".toml.tmpl") else {
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("read template");
        let rendered = text
            .replace("@CUTOVER_PORT@", "18080")
            .replace("@CUTOVER_ADMIN_PORT@", "19901")
            .replace("@UPSTREAM_PORT@", "18000")
            .replace("@WORK@", &dir.path().display().to_string())
            // bench/features.sh and bench/redis_ops.sh start the Redis.
            .replace("@REDIS_PORT@", "16379")
            // bench/soak.sh's own placeholders.
            .replace("@PORT@", "18080")
            .replace("@ADMIN@", "19901")
            .replace("@STATE@", &dir.path().join("state").display().to_string())
            .replace("@PRIMARY@", "18001")
            .replace("@CANARY@", "18002")
            .replace("@BACKUP@", "18003")
            .replace("@SHADOW@", "18004")
            .replace("@VARIANT@", "30s");
        // Placeholders are @NAME@ in capitals (deps like prompt@1 stay).
        let unrendered = rendered
            .split('@')
            .skip(1)
            .any(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()));
        assert!(
            !unrendered,
            "{name}: a placeholder the harness sets is not rendered here:\n{rendered}"
        );
        let config = dir.path().join(format!("{stem}.toml"));
        std::fs::write(&config, rendered).expect("write config");
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("run cutover check");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name} is not a valid config:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(", 0 warnings"),
            "{name} has lints:\n{stdout}"
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected the shadow and cache templates, checked {checked}"
    );
}
