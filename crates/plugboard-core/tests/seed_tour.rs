//! The `seed_tour` example prints exactly the lines the seed documents show.

use std::path::PathBuf;
use std::process::Command;

fn example_binary() -> PathBuf {
    // tests run from target/<profile>/deps; examples are built beside it.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap();
    profile_dir.join("examples").join("seed_tour")
}

#[test]
fn seed_tour_prints_the_seed_documents_output() {
    let bin = example_binary();
    assert!(bin.is_file(), "{} missing: `cargo test` builds examples", bin.display());
    let out = Command::new(&bin).output().unwrap();
    assert!(out.status.success());
    let expected = include_str!("fixtures/seed_tour.expected");
    let got = String::from_utf8(out.stdout).unwrap();
    for (i, (g, e)) in got.lines().zip(expected.lines()).enumerate() {
        assert_eq!(g, e, "line {} differs", i + 1);
    }
    assert_eq!(got.lines().count(), expected.lines().count());
}
