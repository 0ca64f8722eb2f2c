//! Resetting a used fork is a security boundary: after a reset, guest
//! memory must equal the template's (Accessed bits in page tables aside)
//! and nothing of the previous execution may be visible.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use zeroboot_engine::{request_frame, ExecRequest, Language, Template, TemplateOptions};
use zeroboot_kernel::{ForkOptions, Outcome, Sandbox, Sink, Source};

fn template() -> Template {
    let recipe = Language::Python.recipe();
    let root = zeroboot_image::ensure(
        &recipe,
        &zeroboot_image::default_cache_dir(),
        &zeroboot_image::NoProgress,
    )
    .expect("the python image");
    Template::create(Language::Python, &root, &TemplateOptions::default()).unwrap()
}

fn opts(code: &str) -> ForkOptions {
    ForkOptions {
        stdout: Sink::capture(1 << 20),
        stderr: Sink::capture(1 << 20),
        stdin: Source::Empty,
        memory: None,
        request: request_frame(code),
    }
}

/// What executions do to their sandbox, to be undone by each reset.
const MUTATIONS: &[&str] = &[
    "print(1+1)",
    "open('/tmp/leak','w').write('x'*100000); import builtins; builtins.LEAK = 1",
    "import json; json.dumps = None; import sys; sys.modules['leak'] = object()",
    "import numpy as np; a = np.ones(20_000_000); print(a.sum())",
    "import mmap; m = mmap.mmap(-1, 1 << 20); m[:5] = b'hello'; m.close()",
    "import threading; t = threading.Thread(target=lambda: None); t.start(); t.join()",
    "x = [bytearray(4096) for _ in range(2000)]; del x",
    "import subprocess; print(subprocess.run(['echo', 'child'], capture_output=True).stdout)",
    "import os; os.chdir('/tmp'); os.environ['LEAK'] = '1'",
    "raise SystemExit(3)",
    "import os; os._exit(4)",
    "while True: pass",
];

#[test]
fn memory_equals_the_template_after_every_reset() {
    let t = template();
    let snap = &t.snapshot;
    let mut sb = Sandbox::fork(snap, opts("print('first')")).unwrap();
    let mut resets = 0;
    for code in MUTATIONS.iter().cycle().take(MUTATIONS.len() * 2) {
        let o = sb
            .run(Some(Instant::now() + Duration::from_secs(5)))
            .unwrap();
        assert!(
            matches!(o, Outcome::Parked | Outcome::Exited(_) | Outcome::TimedOut),
            "{o:?}"
        );
        if sb.reset(snap, opts(code)).unwrap() {
            resets += 1;
            let diff = sb.differences_from(snap).unwrap();
            assert!(
                diff.is_empty(),
                "after {code:?}: {} pages differ, first at {:#x}",
                diff.len(),
                diff[0]
            );
        } else {
            sb = Sandbox::fork(snap, opts(code)).unwrap();
        }
    }
    assert!(
        resets >= MUTATIONS.len(),
        "too few resets happened: {resets}"
    );
}

#[test]
fn nothing_of_an_execution_is_visible_to_the_next() {
    let t = template();
    let probe = "import os, sys, json, builtins\n\
        print(os.path.exists('/tmp/leak'), getattr(builtins, 'LEAK', None), json.dumps is None, \
        'leak' in sys.modules, os.getcwd(), os.environ.get('LEAK'))";
    let clean = "False None False False / None\n";
    let mut reused = 0;
    for code in MUTATIONS {
        let mut req = ExecRequest::new(*code);
        req.timeout = Duration::from_secs(2);
        t.exec(&req);
        let r = t.exec(&ExecRequest::new(probe));
        assert_eq!(r.stdout, clean, "after {code:?}: {}", r.stderr);
        reused += r.reused as usize;
    }
    assert!(
        reused > MUTATIONS.len() / 2,
        "resets rarely happened: {reused}"
    );
}

#[test]
fn reused_sandboxes_get_fresh_pids_and_entropy() {
    let t = template();
    let code = "import os, random; print(os.getpid(), random.random(), os.urandom(4).hex())";
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        let r = t.exec(&ExecRequest::new(code));
        assert!(seen.insert(r.stdout.clone()), "repeated: {}", r.stdout);
        for part in r.stdout.split_whitespace() {
            assert!(seen.insert(part.to_string()), "repeated value {part}");
        }
    }
}
