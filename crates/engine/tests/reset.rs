//! Resetting a used fork is a security boundary: after a reset, guest
//! memory must equal the template's (Accessed bits in page tables aside)
//! and nothing of the previous execution may be visible.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use zeroboot_engine::{request_frame, ExecRequest, Language, Template, TemplateOptions};
use zeroboot_kernel::{ForkOptions, Outcome, Sandbox, Sink, Source};

fn template_of(lang: Language) -> Template {
    let recipe = lang.recipe();
    let root = zeroboot_image::ensure(
        &recipe,
        &zeroboot_image::default_cache_dir(),
        &zeroboot_image::NoProgress,
    )
    .expect("the image");
    Template::create(lang, &root, &TemplateOptions::default()).unwrap()
}

fn template() -> Template {
    template_of(Language::Python)
}

fn opts(code: &str) -> ForkOptions {
    ForkOptions {
        stdout: Sink::capture(1 << 20),
        stderr: Sink::capture(1 << 20),
        stdin: Source::Empty,
        memory: None,
        disk: None,
        fds: None,
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

/// The same for Node: V8 maps, protects and collects memory, and runs
/// threads beside the main one.
const NODE_MUTATIONS: &[&str] = &[
    "console.log(1+1)",
    "globalThis.LEAK = new Array(1e6).fill(7); require('fs').writeFileSync('/tmp/leak', 'x'.repeat(100000))",
    "const b = []; for (let i = 0; i < 200; i++) b.push(Buffer.alloc(65536, i)); console.log(b.length)",
    "let s = ''; for (let i = 0; i < 100000; i++) s += String.fromCharCode(65 + i % 26); console.log(s.length)",
    "Object.prototype.leak = 1; JSON.parse = null",
    "await new Promise(r => setTimeout(r, 5)); console.log('t')",
    "require('zlib').gzipSync(Buffer.alloc(1 << 20)); console.log('z')",
    "process.chdir('/tmp'); process.env.LEAK = '1'",
    "throw new Error('x')",
    "process.exit(4)",
    "while (true) {}",
];

#[test]
fn memory_equals_the_template_after_every_reset() {
    memory_equals_template_after_resets(Language::Python, MUTATIONS);
}

#[test]
fn node_memory_equals_the_template_after_every_reset() {
    memory_equals_template_after_resets(Language::Node, NODE_MUTATIONS);
}

#[test]
fn nothing_of_a_node_execution_is_visible_to_the_next() {
    let t = template_of(Language::Node);
    let probe = "console.log(require('fs').existsSync('/tmp/leak'), typeof LEAK, ({}).leak, typeof JSON.parse, process.cwd(), process.env.LEAK)";
    let clean = "false undefined undefined function / undefined\n";
    let mut reused = 0;
    for code in NODE_MUTATIONS {
        let mut req = ExecRequest::new(*code);
        req.timeout = Duration::from_secs(2);
        t.exec(&req);
        let r = t.exec(&ExecRequest::new(probe));
        assert_eq!(r.stdout, clean, "after {code:?}: {}", r.stderr);
        reused += r.reused as usize;
    }
    assert!(
        reused > NODE_MUTATIONS.len() / 2,
        "resets rarely happened: {reused}"
    );
}

fn memory_equals_template_after_resets(lang: Language, mutations: &[&str]) {
    let t = template_of(lang);
    let snap = &t.snapshot;
    let mut sb = Sandbox::fork(snap, opts(mutations[0])).unwrap();
    let mut resets = 0;
    for (i, code) in mutations
        .iter()
        .cycle()
        .take(mutations.len() * 2)
        .enumerate()
    {
        let o = sb
            .run(Some(Instant::now() + Duration::from_secs(5)))
            .unwrap();
        assert!(
            matches!(o, Outcome::Parked | Outcome::Exited(_) | Outcome::TimedOut),
            "{o:?}"
        );
        // Both ways: a reset when taken, or a restore between requests
        // (what the server does after a reply) and a begin when taken.
        let reset = if i % 2 == 0 {
            sb.reset(snap, opts(code)).unwrap()
        } else {
            sb.restore(snap).unwrap() && sb.begin(snap, opts(code))
        };
        if reset {
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
        resets >= mutations.len(),
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
    for (i, code) in MUTATIONS.iter().enumerate() {
        let mut req = ExecRequest::new(*code);
        req.timeout = Duration::from_secs(2);
        t.exec(&req);
        if i % 2 == 1 {
            // Restored between requests, as the server does after a reply.
            t.tidy();
        }
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

/// Executions that map fresh memory (new page tables, freed again by each
/// reset) see it zeroed, and what they write there is what the VMM reads:
/// no stale translation of an earlier execution's tables survives a reset.
#[test]
fn fresh_mappings_after_resets_see_their_own_frames() {
    let t = template();
    // Each execution first takes a different number of frames, so the same
    // addresses land on other frames (and tables) than the last time.
    let code = "import mmap, os\n\
        pad = mmap.mmap(-1, (1 + os.urandom(1)[0]) * 4096)\n\
        for i in range(0, len(pad), 4096): pad[i] = 1\n\
        n = 8 << 20\n\
        m = mmap.mmap(-1, n)\n\
        assert m[:] == bytes(n), 'fresh mapping not zero'\n\
        tag = os.urandom(16)\n\
        for i in range(0, n, 4096): m[i:i+16] = tag\n\
        with open('/tmp/m', 'wb') as f: f.write(m)\n\
        with open('/tmp/m', 'rb') as f: back = f.read()\n\
        assert back == m[:], 'the VMM reads other frames than the guest wrote'\n\
        print('ok')";
    let mut reused = 0;
    for _ in 0..12 {
        let r = t.exec(&ExecRequest::new(code));
        assert_eq!(r.stdout, "ok\n", "{}", r.stderr);
        reused += r.reused as usize;
    }
    assert!(reused >= 10, "resets rarely happened: {reused}");
}

#[test]
fn a_spare_fork_serves_one_request_then_resets_like_any_other() {
    let t = template();
    let snap = &t.snapshot;
    // Made ahead with one request's options, begun with another's.
    let mut sb = Sandbox::fork(snap, opts("print('not this one')")).unwrap();
    assert!(sb.begin_unrun(snap, opts("print(1+1)")).unwrap());
    let o = sb
        .run(Some(Instant::now() + Duration::from_secs(10)))
        .unwrap();
    assert_eq!(o, Outcome::Parked);
    assert_eq!(sb.k.stdout_mut().take().0, b"2\n");
    // It has run: only a reset may bring it back.
    assert!(!sb.begin_unrun(snap, opts("print(3)")).unwrap());
    assert!(sb.reset(snap, opts("print(3)")).unwrap());
    let diff = sb.differences_from(snap).unwrap();
    assert!(
        diff.is_empty(),
        "{} pages differ after the reset",
        diff.len()
    );

    // Through the engine: a spare serves the request when no idle fork waits.
    t.clear_idle();
    assert_eq!(t.refill_spares(2), 2);
    let r = t.exec(&ExecRequest::new("print(1+1)"));
    assert_eq!(r.stdout, "2\n", "{}", r.stderr);
    assert!(!r.reused);
    assert_eq!(t.spares(), 1);
}
