//! The BGP peer simulator at a CI-sized scale (200 clients × 4 blocks) through one reflector:
//! every client converges (holds every other client's blocks), a withdraw wave and a flap
//! reach every client, and the run's figures are printed. Runs tests/bench/rr_scale.sh on the
//! debug binaries of this build, against BIRD 2 and against routed. Needs root, BIRD 2 and
//! ROUTED_E2E=1.

mod common;

use std::path::Path;
use std::process::Command;

/// Runs the scale script for one reflector at 200 clients; returns its table row.
fn run_scale(reflector: &str) -> String {
    let routectl = Path::new(env!("CARGO_BIN_EXE_routectl"));
    let bin_dir = routectl.parent().expect("binary directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench/rr_scale.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg("200")
        .env("REFLECTORS", reflector)
        .env("ROUTED_BIN_DIR", bin_dir)
        // A bound, not a target: BIRD needs tens of seconds for 200 clients on a loaded machine.
        .env("TIMEOUT", "300")
        .output()
        .expect("run tests/bench/rr_scale.sh");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(output.status.success(), "rr_scale.sh failed: {stderr}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&format!("| {reflector} |")))
        .unwrap_or_else(|| panic!("no result row for {reflector}: {stdout}"))
        .to_string();
    assert!(!row.contains("failed"), "{row}");
    // Figures: all Established, converged, withdraw wave, flap back: all measured.
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells.get(2), Some(&"200 × 4"), "{row}");
    for cell in &cells[3..7] {
        let seconds: f64 = cell
            .parse()
            .unwrap_or_else(|_| panic!("figure {cell:?}: {row}"));
        assert!(seconds >= 0.0, "{row}");
    }
    row
}

#[test]
fn simulator_200_clients_converge_through_a_bird_reflector() {
    if !common::require_e2e("simulator_200_clients_converge_through_a_bird_reflector") {
        return;
    }
    println!("{}", run_scale("bird"));
}

/// The same run against routed as the reflector (its Node's rr_cluster_id set, the mesh off,
/// one iBGP peer per client).
#[test]
fn simulator_200_clients_converge_through_a_routed_reflector() {
    if !common::require_e2e("simulator_200_clients_converge_through_a_routed_reflector") {
        return;
    }
    println!("{}", run_scale("routed"));
}
