//! A fork's monotonic clock continues from its template's: the time a
//! template sat parked is not seen by its forks (timers armed in the
//! template, such as V8's memory reducer, must not all be due in every
//! request), while the wall clock is the host's.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use zeroboot_engine::{ExecRequest, Language, Template, TemplateOptions};

const CODE: &str = "import time; print(time.monotonic_ns(), time.time_ns())";

fn clocks(t: &Template) -> (u64, u64) {
    let r = t.exec(&ExecRequest::new(CODE));
    assert_eq!(r.exit_code, 0, "{:?} {:?}", r.stderr, r.error);
    let v: Vec<u64> = r
        .stdout
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (v[0], v[1])
}

#[test]
fn forks_do_not_see_the_time_their_template_was_parked() {
    let recipe = Language::Python.recipe();
    let root = zeroboot_image::ensure(
        &recipe,
        &zeroboot_image::default_cache_dir(),
        &zeroboot_image::NoProgress,
    )
    .expect("the image");
    let t = Template::create(Language::Python, &root, &TemplateOptions::default()).unwrap();
    // A new fork, then a reset one, each after a pause.
    let (mono0, real0) = clocks(&t);
    std::thread::sleep(Duration::from_secs(2));
    let (mono1, real1) = clocks(&t);
    t.clear_idle();
    std::thread::sleep(Duration::from_secs(2));
    let (mono2, real2) = clocks(&t);
    for (m, r) in [(mono1, real1), (mono2, real2)] {
        // Both start from the template's frozen monotonic time.
        assert!(
            m.abs_diff(mono0) < 1_000_000_000,
            "monotonic {mono0} then {m}: the parked time leaked into a fork"
        );
        assert!(r >= real0 + 1_900_000_000, "realtime {real0} then {r}");
    }
}
