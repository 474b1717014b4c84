//! The peak memory of rendering hostile templates, measured as the process's peak RSS (Linux's
//! VmHWM, reset through `clear_refs` before each): this file is its own test binary, with one
//! test, so nothing else runs while it measures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use minijinja::Value;

/// The process's peak resident set since the last reset, in bytes.
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status")
        .expect("this test measures memory through /proc/self/status (Linux)");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("/proc/self/status has VmHWM");
    kib * 1024
}

fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5")
        .expect("this test resets the peak RSS through /proc/self/clear_refs (Linux)");
}

#[test]
fn hostile_templates_render_in_bounded_memory() {
    const LIMIT: usize = 1024 * 1024;
    let hostile = [
        "{{ 'x' * 100000000 }}",
        "{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{{ range(100000)|join('x' * 1000000) }}",
        "{{ ('x' * 1000000)|replace('x', 'yyyyyyyyyy') }}",
        "{% set x %}{% for i in range(100000) %}{{ 'x' * 1000000 }}{% endfor %}{% endset %}",
        "{{ ((range(100000)|list) * 100000)|length }}",
        "{{ [1]|batch(100000000, 'x') }}",
    ];
    for source in hostile {
        let mut env = atoll_spec::template::environment();
        env.add_template("t", source).expect("parses");
        let template = env.get_template("t").expect("added");
        let program = atoll_spec::render::program(&template).expect("rewritable");
        reset_peak();
        let before = peak_rss();
        let started = Instant::now();
        let result =
            atoll_spec::render::render(&env, &program, BTreeMap::<String, Value>::new(), LIMIT);
        let grew = peak_rss().saturating_sub(before);
        assert!(result.is_err(), "{source} rendered");
        assert!(started.elapsed() < Duration::from_secs(2), "{source}: slow");
        assert!(
            grew <= 2 * atoll_spec::render::WORK_FACTOR * LIMIT,
            "{source}: the peak RSS grew by {grew} bytes"
        );
    }
}
