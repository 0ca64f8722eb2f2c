//! Live sandboxes: state persists between runs of one sandbox, never
//! leaks into another or into one-shot executions, and a sandbox whose code
//! timed out or ended is dead.
#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;
use std::time::Duration;

use zeroboot_engine::{
    ExecRequest, Language, LiveError, LiveOptions, LiveSandbox, Template, TemplateOptions,
};

fn template_of(lang: Language) -> Template {
    let root = zeroboot_image::ensure(
        &lang.recipe(),
        &zeroboot_image::default_cache_dir(),
        &zeroboot_image::NoProgress,
    )
    .expect("the image");
    Template::create(lang, &root, &TemplateOptions::default()).unwrap()
}

fn python() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| template_of(Language::Python))
}

const T: Duration = Duration::from_secs(30);
const CAP: usize = 1 << 20;

fn live(t: &Template) -> LiveSandbox {
    LiveSandbox::create(t, LiveOptions::default()).unwrap()
}

#[test]
fn state_persists_within_a_sandbox_only() {
    let t = python();
    let mut a = live(t);
    let mut b = live(t);
    let r = a.run("x = 41", T, CAP).unwrap();
    assert_eq!(
        (r.exit_code, r.stdout.as_str(), r.stderr.as_str()),
        (0, "", "")
    );
    let r = a.run("print(x + 1)", T, CAP).unwrap();
    assert_eq!(r.stdout, "42\n", "{r:?}");
    // Modules imported and files written stay too.
    a.run("import json; open('/tmp/f', 'w').write('kept')", T, CAP)
        .unwrap();
    let r = a
        .run("print(json.dumps(open('/tmp/f').read()))", T, CAP)
        .unwrap();
    assert_eq!(r.stdout, "\"kept\"\n", "{r:?}");
    // Another sandbox sees none of it.
    let r = b.run("print(x)", T, CAP).unwrap();
    assert_eq!(r.exit_code, 1);
    assert!(r.stderr.contains("NameError"), "{r:?}");
    let r = b
        .run("import os; print(os.path.exists('/tmp/f'))", T, CAP)
        .unwrap();
    assert_eq!(r.stdout, "False\n");
    // Nor does a one-shot execution, which keeps its fresh namespace.
    let r = t.exec(&ExecRequest::new("print('x' in globals())"));
    assert_eq!(r.stdout, "False\n", "{r:?}");
    assert_eq!(a.runs(), 4);
    assert!(a.is_alive() && b.is_alive());
}

#[test]
fn errors_and_sys_exit_keep_it_alive() {
    let mut a = live(python());
    let r = a.run("y = 1\nraise ValueError('boom')", T, CAP).unwrap();
    assert_eq!(r.exit_code, 1);
    assert!(r.stderr.contains("ValueError: boom"), "{r:?}");
    let r = a.run("import sys; sys.exit(3)", T, CAP).unwrap();
    assert_eq!(r.exit_code, 3);
    let r = a.run("print(y)", T, CAP).unwrap();
    assert_eq!(r.stdout, "1\n", "{r:?}");
}

#[test]
fn a_timeout_or_an_exit_ends_it() {
    let mut a = live(python());
    a.run("z = 1", T, CAP).unwrap();
    let r = a
        .run("while True: pass", Duration::from_millis(300), CAP)
        .unwrap();
    assert!(r.timed_out && r.exit_code == 124, "{r:?}");
    assert!(!a.is_alive());
    match a.run("print(z)", T, CAP) {
        Err(LiveError::Dead(why)) => assert!(why.contains("timed out"), "{why}"),
        other => panic!("{other:?}"),
    }
    let mut b = live(python());
    let r = b.run("import os; os._exit(7)", T, CAP).unwrap();
    assert_eq!(r.exit_code, 7);
    assert!(matches!(b.run("1", T, CAP), Err(LiveError::Dead(_))));
    let mut c = live(python());
    c.kill("killed on request");
    assert!(matches!(c.run("1", T, CAP), Err(LiveError::Dead(w)) if w == "killed on request"));
}

#[test]
fn env_and_output_per_run() {
    let opts = LiveOptions {
        env: vec![("GREETING".into(), "hello".into())],
        ..Default::default()
    };
    let mut a = LiveSandbox::create(python(), opts).unwrap();
    let r = a
        .run(
            "import os, sys; print(os.environ['GREETING']); print('e', file=sys.stderr)",
            T,
            CAP,
        )
        .unwrap();
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("hello\n", "e\n"));
    // Each run returns only its own output.
    let r = a.run("print(os.environ['GREETING'] * 2)", T, CAP).unwrap();
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("hellohello\n", ""));
    let r = a.run("print('z' * 100)", T, 10).unwrap();
    assert!(
        r.stdout_truncated && r.stdout.starts_with("zzzzzzzzzz\n[zeroboot"),
        "{r:?}"
    );
}

#[test]
fn runs_on_any_thread() {
    let mut a = live(python());
    a.run("import time; n = 0; t0 = time.process_time()", T, CAP)
        .unwrap();
    for _ in 0..3 {
        a = std::thread::spawn(move || {
            let r = a
                .run("n += 1; assert time.process_time() >= t0", T, CAP)
                .unwrap();
            assert_eq!(r.exit_code, 0, "{r:?}");
            a
        })
        .join()
        .unwrap();
    }
    assert_eq!(a.run("print(n)", T, CAP).unwrap().stdout, "3\n");
}

#[test]
fn a_recycled_sandbox_leaks_nothing() {
    // Its own template, so that the idle forks are only this test's.
    let t = template_of(Language::Python);
    let mut a = live(&t);
    a.run(
        "import builtins, threading, time\nopen('/tmp/secret', 'w').write('s3cret')\nbuiltins.SECRET = 's3cret'\nx = [bytearray(4096) for _ in range(500)]\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()",
        T,
        CAP,
    )
    .unwrap();
    a.run("y = 'more'", T, CAP).unwrap();
    assert!(a.recycle(&t, "killed on request"));
    assert!(t.tidy(), "the recycled fork is restored");
    let r = t.exec(&ExecRequest::new(
        "import os, builtins\nprint(os.path.exists('/tmp/secret'), getattr(builtins, 'SECRET', None), 'x' in globals(), 'y' in globals())",
    ));
    assert!(r.reused, "{r:?}");
    assert_eq!(r.stdout, "False None False False\n", "{r:?}");
    // A live sandbox made from the recycled fork starts clean too.
    t.exec(&ExecRequest::new("1"));
    t.tidy();
    let mut b = live(&t);
    let r = b
        .run(
            "import builtins; print(getattr(builtins, 'SECRET', None))",
            T,
            CAP,
        )
        .unwrap();
    assert_eq!(r.stdout, "None\n", "{r:?}");
    // Another template's fork is not taken.
    let other = live(python());
    assert!(!other.recycle(&t, "killed"));
}

#[test]
fn spare_forks_serve_creates() {
    let t = template_of(Language::Python);
    assert_eq!(t.refill_spares(3), 3);
    assert_eq!(t.spares(), 3);
    let mut a = live(&t);
    let mut b = live(&t);
    assert_eq!(t.spares(), 1);
    a.run("x = 1", T, CAP).unwrap();
    let r = b.run("print('x' in globals())", T, CAP).unwrap();
    assert_eq!(r.stdout, "False\n", "{r:?}");
    // A sandbox with limits of its own takes the last spare too, begun
    // again with its limits (`Sandbox::begin_unrun`), and they hold.
    let limited = LiveOptions {
        memory: Some(256 << 20),
        ..Default::default()
    };
    let mut c = LiveSandbox::create(&t, limited).unwrap();
    assert_eq!(t.spares(), 0);
    let r = c.run("bytearray(300 << 20)", T, CAP).unwrap();
    assert!(r.out_of_memory || r.stderr.contains("MemoryError"), "{r:?}");
}

#[test]
fn a_warmed_spare_serves_a_create_and_keeps_nothing_of_its_run() {
    let t = template_of(Language::Python);
    assert!(!t.warm_spare(), "no spare to warm yet");
    assert_eq!(t.refill_spares(1), 1);
    assert!(t.warm_spare());
    assert_eq!((t.spares(), t.idle_forks()), (0, 1));
    assert!(t.tidy(), "the warmed fork is restored to the template");
    let mut a = live(&t);
    assert_eq!(t.idle_forks(), 0, "the create took the warmed fork");
    // Its run left nothing: no output, no session namespace.
    let r = a
        .run(
            "print(sorted(k for k in globals() if not k.startswith('__')))",
            T,
            CAP,
        )
        .unwrap();
    assert_eq!(r.stdout, "[]\n", "{r:?}");
}

#[test]
fn node_state_persists() {
    let t = template_of(Language::Node);
    let mut a = live(&t);
    let r = a
        .run("var y = 41; const k = 'kept'; globalThis.g = [1]", T, CAP)
        .unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");
    let r = a
        .run("g.push(2); console.log(y + 1, k, g.length)", T, CAP)
        .unwrap();
    assert_eq!(r.stdout, "42 kept 2\n", "{r:?}");
    let mut b = live(&t);
    let r = b.run("console.log(typeof y)", T, CAP).unwrap();
    assert_eq!(r.stdout, "undefined\n", "{r:?}");
}

#[test]
fn forks_share_the_sources_pages_and_each_diverges_alone() {
    let t = python();
    let mut src = live(t);
    src.run("x = [1] * 100000\nimport os\ntag = 'src'", T, CAP)
        .unwrap();
    let mut first = src.fork(2).unwrap().into_iter().map(|c| c.unwrap());
    let (mut first0, mut first1) = (first.next().unwrap(), first.next().unwrap());
    // Forked again with nothing run in between: the same state.
    let mut again = src.fork(1).unwrap().pop().unwrap().unwrap();
    for c in [&mut first0, &mut first1, &mut again] {
        let r = c.run("print(len(x), tag)", T, CAP).unwrap();
        assert_eq!(r.stdout, "100000 src\n", "{r:?}");
    }
    // The source changes after sharing its pages: earlier copies do not
    // see it, a later one does; copies change alone.
    src.run("x.append(2); tag = 'changed'", T, CAP).unwrap();
    let mut later = src.fork(1).unwrap().pop().unwrap().unwrap();
    first0.run("tag = 'copy0'", T, CAP).unwrap();
    for (c, want) in [
        (&mut first0, "100000 copy0\n"),
        (&mut first1, "100000 src\n"),
        (&mut again, "100000 src\n"),
        (&mut later, "100001 changed\n"),
        (&mut src, "100001 changed\n"),
    ] {
        let r = c.run("print(len(x), tag)", T, CAP).unwrap();
        assert_eq!(r.stdout, want, "{r:?}");
    }
    // A forked source shares its pages with its copies: never recycled.
    assert!(!src.recycle(t, "killed on request"));
}

#[test]
fn forks_after_each_change_stack_layers_and_every_generation_keeps_its_state() {
    let t = python();
    let mut src = live(t);
    src.run("big = list(range(200000))\nx = 0", T, CAP).unwrap();
    // Each fork after a run copies what the run changed into a layer over
    // the last: more generations than the chain may be deep, so layers
    // are folded on the way, and one freeze for many copies folds the rest.
    let mut gens = Vec::new();
    for i in 1..=7 {
        src.run(
            &format!("x = {i}\nl = [{i}] * 5000\nbig[{i}] = -{i}"),
            T,
            CAP,
        )
        .unwrap();
        let count = if i == 6 { 9 } else { 1 };
        let mut copies = src.fork(count).unwrap();
        gens.push((i, copies.pop().unwrap().unwrap()));
    }
    let check = |c: &mut LiveSandbox, i: i32| {
        let r = c
            .run("print(x, len(l), l[0], sum(big[1:8]), len(big))", T, CAP)
            .unwrap();
        // big[1..=i] were negated by generations 1..=i.
        let neg: i32 = (1..=i).sum();
        let rest: i32 = (i + 1..8).sum();
        assert_eq!(
            r.stdout,
            format!("{i} 5000 {i} {} 200000\n", rest - neg),
            "generation {i}: {r:?}"
        );
    };
    for (i, c) in gens.iter_mut() {
        check(c, *i);
    }
    // A copy forked after it ran: its own change over its layers.
    let (_, c3) = &mut gens[2];
    c3.run("x = 30", T, CAP).unwrap();
    let mut c3b = c3.fork(1).unwrap().pop().unwrap().unwrap();
    let r = c3b.run("print(x, l[0])", T, CAP).unwrap();
    assert_eq!(r.stdout, "30 3\n", "{r:?}");
    // The source goes on over its layers.
    src.run("x = 99", T, CAP).unwrap();
    let r = src.run("print(x, l[0], sum(big[1:8]))", T, CAP).unwrap();
    assert_eq!(r.stdout, "99 7 -28\n", "{r:?}");
}
