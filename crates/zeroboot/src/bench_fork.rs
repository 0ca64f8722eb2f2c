//! `zeroboot bench fork`: the numbers that matter for a fork-per-execution
//! sandbox, measured in one run.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use zeroboot_engine::{request_frame, ExecRequest, Language, Template, TemplateOptions};
use zeroboot_kernel::sandbox::reset::ResetCost;
use zeroboot_kernel::{ForkOptions, Outcome, Sandbox, Sink, Source};

use crate::bench::percentiles;

/// This process's resident memory (KiB): VmRSS and its parts, RssAnon
/// (heap, and guest pages made private by a write), RssFile and RssShmem
/// (pages of the templates' memory files a fork mapped by reading them:
/// shared with the template and every other fork, yet counted in each).
#[derive(Debug, Clone, Copy, Default)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
    shmem: u64,
}

fn rss_kib() -> Rss {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Rss {
        total: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
        shmem: field("RssShmem:"),
    }
}

fn fork_opts() -> ForkOptions {
    ForkOptions {
        stdout: Sink::capture(1 << 16),
        stderr: Sink::capture(1 << 16),
        stdin: Source::Empty,
        memory: None,
        disk: None,
        fds: None,
        request: Vec::new(),
    }
}

fn us(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// One fork run `n` times with `code`, reset to the template before each
/// run: what each reset cost, part by part (restore and begin together,
/// as a reset on the request path without `tidy`).
fn reset_parts(t: &Template, code: &str, expect: &str, n: usize) -> Result<Vec<ResetCost>> {
    let opts = || ForkOptions {
        request: request_frame(code),
        ..fork_opts()
    };
    let mut sb = Sandbox::fork(&t.snapshot, opts())?;
    let mut costs = Vec::with_capacity(n);
    for i in 0..=n {
        if i > 0 {
            if !sb.reset(&t.snapshot, opts())? {
                bail!("the fork could not be reset");
            }
            costs.push(sb.last_reset);
        }
        let outcome = sb.run(Some(Instant::now() + Duration::from_secs(30)))?;
        let (out, _) = sb.k.stdout_mut().take();
        if outcome != Outcome::Parked || out != expect.as_bytes() {
            bail!(
                "{code} gave {outcome:?}, {:?}",
                String::from_utf8_lossy(&out)
            );
        }
    }
    Ok(costs)
}

/// Medians of each part of `costs`: (pages, pte writes, new tables, dirty
/// log, copy, shadow MMU, vCPU, kernel state, total, pages that differed),
/// times in µs.
fn reset_medians(costs: &[ResetCost]) -> [f64; 10] {
    let med = |f: &dyn Fn(&ResetCost) -> u64| percentiles(costs.iter().map(f).collect()).0;
    [
        med(&|c| c.pages as u64 * 1000),
        med(&|c| c.pte_writes as u64 * 1000),
        med(&|c| c.new_tables as u64 * 1000),
        med(&|c| c.dirty_log_ns),
        med(&|c| c.copy_ns),
        med(&|c| c.shadow_mmu_ns),
        med(&|c| c.vcpu_ns),
        med(&|c| c.kernel_ns),
        med(&|c| c.total_ns()),
        med(&|c| c.pages_changed as u64 * 1000),
    ]
}

/// What the benchmark runs, in the template's language.
struct Snippets {
    hello: &'static str,
    hello_out: &'static str,
    /// A heavier snippet with its label and expected output.
    heavy: (&'static str, &'static str, &'static str),
    /// Writes `{secret}` to /tmp and a global, then prints "written".
    write_secret: &'static str,
    /// Prints "False None" when neither is visible.
    read_secret: &'static str,
}

fn snippets(lang: Language) -> Snippets {
    match lang {
        // Plain runs in the code interpreter are the Python agent's.
        Language::Python | Language::CodeInterpreter => Snippets {
            hello: "print(1+1)",
            hello_out: "2\n",
            heavy: (
                "numpy dot",
                "import numpy as np; print(np.dot(np.arange(1000), np.arange(1000)))",
                "332833500\n",
            ),
            write_secret: "open('/tmp/secret','w').write('{secret}'); import builtins; builtins.SECRET = '{secret}'; print('written')",
            read_secret: "import os, builtins\nprint(os.path.exists('/tmp/secret'), getattr(builtins, 'SECRET', None))",
        },
        Language::Node => Snippets {
            hello: "console.log(1+1)",
            hello_out: "2\n",
            heavy: (
                "JSON round trip",
                "const a = Array.from({length: 1000}, (_, i) => i); console.log(JSON.parse(JSON.stringify(a)).reduce((x, y) => x + y * y, 0))",
                "332833500\n",
            ),
            write_secret: "require('fs').writeFileSync('/tmp/secret', '{secret}'); globalThis.SECRET = '{secret}'; console.log('written')",
            read_secret: "console.log(require('fs').existsSync('/tmp/secret') ? 'True' : 'False', globalThis.SECRET ?? 'None')",
        },
    }
}

/// The VM pool's hits so far (0 without a pool).
fn pool_hits() -> u64 {
    zeroboot_vmm::pool::global().map_or(0, |p| p.stats().hits)
}

/// Let the VM pool fill up before a measurement, as it does between
/// requests on a server.
fn let_pool_fill() {
    if let Some(p) = zeroboot_vmm::pool::global() {
        p.wait_full(Duration::from_secs(30));
    }
}

/// What `zeroboot bench fork` measures (see `crate::bench::Bench::Fork`).
pub struct ForkArgs<'a> {
    pub template: &'a str,
    pub forks: usize,
    pub execs: usize,
    pub live: &'a [usize],
    pub vm_pool: usize,
    pub vm_reaper: usize,
    pub json: bool,
}

/// Forks held alive at once: how long making `n` of them took, and the
/// host memory they added.
struct LiveRound {
    n: usize,
    time: Duration,
    from_pool: u64,
    rss_per_fork: u64,
    /// Of it: anonymous, file and shared-memory pages (bytes per fork).
    rss_parts: [u64; 3],
}

/// Make `n` forks and hold them, then let them go (and wait for the
/// reaper to tear them down, so that the next round starts clean).
fn live_round(t: &Template, n: usize) -> Result<LiveRound> {
    let_pool_fill();
    let before = rss_kib();
    let hits = pool_hits();
    let s = Instant::now();
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(Sandbox::fork(&t.snapshot, fork_opts())?);
    }
    let time = s.elapsed();
    let from_pool = pool_hits() - hits;
    let after = rss_kib();
    let per = |a: u64, b: u64| (a.saturating_sub(b) * 1024) / n.max(1) as u64;
    drop(held);
    if let Some(r) = zeroboot_vmm::reaper::global() {
        r.wait_idle(Duration::from_secs(60));
    }
    Ok(LiveRound {
        n,
        time,
        from_pool,
        rss_per_fork: per(after.total, before.total),
        rss_parts: [
            per(after.anon, before.anon),
            per(after.file, before.file),
            per(after.shmem, before.shmem),
        ],
    })
}

pub fn run(a: ForkArgs) -> Result<()> {
    let ForkArgs {
        template,
        forks,
        execs,
        live,
        vm_pool,
        vm_reaper,
        json,
    } = a;
    if live.is_empty() || live.contains(&0) {
        bail!("--live takes counts of at least 1");
    }
    let Some(lang) = Language::parse(template) else {
        bail!("unknown template {template:?} (known: python, node)");
    };
    let recipe = lang.recipe();
    let cache = crate::cache_dir();
    let root = crate::image::ensure_image(&recipe, &cache)?;
    // Template creation, measured fresh (not loaded from the cache).
    let t0 = Instant::now();
    let t = Template::create(lang, &root, &TemplateOptions::default())
        .context("creating the template")?;
    let create = t0.elapsed();
    if vm_pool > 0 {
        zeroboot_vmm::pool::install(vm_pool, None).context("starting the VM pool")?;
    }
    if vm_reaper > 0 {
        zeroboot_vmm::reaper::install(vm_reaper, None).context("starting the VM reaper")?;
    }

    let_pool_fill();

    let mut fork_ns = Vec::with_capacity(forks);
    for _ in 0..forks {
        let s = Instant::now();
        let sb = Sandbox::fork(&t.snapshot, fork_opts())?;
        fork_ns.push(us(s.elapsed()));
        drop(sb);
    }

    // Every execution in a new fork, then in forks reset for reuse (what
    // the server does).
    let sn = snippets(lang);
    let req = ExecRequest::new(sn.hello);
    let check = |r: &zeroboot_engine::ExecResult| -> Result<()> {
        if r.stdout != sn.hello_out || r.exit_code != 0 {
            bail!(
                "{} gave {:?} / {:?} (exit {})",
                sn.hello,
                r.stdout,
                r.stderr,
                r.exit_code
            );
        }
        Ok(())
    };
    let mut fresh_ns = Vec::with_capacity(execs);
    t.max_idle.store(0, std::sync::atomic::Ordering::Relaxed);
    t.clear_idle();
    for _ in 0..execs {
        let r = t.exec(&req);
        check(&r)?;
        fresh_ns.push(us(r.total_time));
    }
    t.max_idle.store(
        zeroboot_engine::DEFAULT_MAX_IDLE,
        std::sync::atomic::Ordering::Relaxed,
    );
    let mut exec_ns = Vec::with_capacity(execs);
    let mut reset_ns = Vec::with_capacity(execs);
    let mut reused = 0;
    for _ in 0..execs {
        let r = t.exec(&req);
        check(&r)?;
        reused += r.reused as usize;
        exec_ns.push(us(r.total_time));
        if r.reused {
            reset_ns.push(us(r.fork_time));
        }
    }
    let (r50, _, r99) = percentiles(reset_ns);
    let parts = reset_medians(&reset_parts(&t, sn.hello, sn.hello_out, execs)?);
    let part_names = [
        "pages",
        "pte_writes",
        "new_tables",
        "dirty_log_us",
        "copy_us",
        "shadow_mmu_us",
        "vcpu_us",
        "kernel_state_us",
        "total_us",
        "pages_changed",
    ];
    let mut numpy_ns = Vec::new();
    let (heavy_label, heavy_code, heavy_out) = sn.heavy;
    let req = ExecRequest::new(heavy_code);
    for _ in 0..(execs / 4).max(5) {
        let r = t.exec(&req);
        if r.stdout != heavy_out {
            bail!("{heavy_label} gave {:?} / {:?}", r.stdout, r.stderr);
        }
        numpy_ns.push(us(r.total_time));
    }

    // Many live forks at once.
    let rounds = live
        .iter()
        .map(|&n| live_round(&t, n))
        .collect::<Result<Vec<_>>>()?;

    // Isolation: what one execution writes, the next cannot see.
    let secret = format!(
        "{:x}",
        Instant::now().elapsed().as_nanos() ^ 0x5eed_1234_abcd
    );
    let w = t.exec(&ExecRequest::new(
        sn.write_secret.replace("{secret}", &secret),
    ));
    let r = t.exec(&ExecRequest::new(sn.read_secret));
    let isolated = w.stdout == "written\n" && r.stdout == "False None\n";

    let last = rounds.last().context("no live rounds")?;
    let (f50, _, f99) = percentiles(fork_ns);
    let (e50, _, e99) = percentiles(exec_ns);
    let (x50, _, x99) = percentiles(fresh_ns);
    let (n50, _, _) = percentiles(numpy_ns);
    if json {
        println!(
            "{{\"template\":\"{}\",\"template_create_ms\":{:.1},\"fork_p50_us\":{f50:.1},\"fork_p99_us\":{f99:.1},\"exec_print_p50_ms\":{:.3},\"exec_print_p99_ms\":{:.3},\"fresh_exec_print_p50_ms\":{:.3},\"fresh_exec_print_p99_ms\":{:.3},\"reused\":{reused},\"reset_p50_ms\":{:.3},\"reset_p99_ms\":{:.3},\"reset_parts_p50\":{{{}}},\"exec_heavy\":\"{heavy_label}\",\"exec_heavy_p50_ms\":{:.3},\"vm_pool\":{vm_pool},\"vm_reaper\":{vm_reaper},\"live_forks\":{},\"live_from_pool\":{},\"live_create_ms\":{:.1},\"rss_per_fork_bytes\":{},\"live\":[{}],\"isolation_ok\":{isolated}}}",
            lang.name(),
            create.as_secs_f64() * 1e3,
            e50 / 1e3,
            e99 / 1e3,
            x50 / 1e3,
            x99 / 1e3,
            r50 / 1e3,
            r99 / 1e3,
            part_names
                .iter()
                .zip(parts)
                .map(|(k, v)| format!("\"{k}\":{v:.1}"))
                .collect::<Vec<_>>()
                .join(","),
            n50 / 1e3,
            last.n,
            last.from_pool,
            last.time.as_secs_f64() * 1e3,
            last.rss_per_fork,
            rounds
                .iter()
                .map(|r| format!(
                    "{{\"forks\":{},\"create_ms\":{:.1},\"per_fork_us\":{:.1},\"from_pool\":{},\"rss_per_fork_bytes\":{},\"rss_anon_per_fork_bytes\":{},\"rss_file_per_fork_bytes\":{},\"rss_shmem_per_fork_bytes\":{}}}",
                    r.n,
                    r.time.as_secs_f64() * 1e3,
                    r.time.as_secs_f64() * 1e6 / r.n as f64,
                    r.from_pool,
                    r.rss_per_fork,
                    r.rss_parts[0],
                    r.rss_parts[1],
                    r.rss_parts[2]
                ))
                .collect::<Vec<_>>()
                .join(","),
        );
    } else {
        println!(
            "template {} created in {:.1} ms; hello is `{}`",
            lang.name(),
            create.as_secs_f64() * 1e3,
            sn.hello
        );
        println!("fork only                n={forks:<5} p50 {f50:>9.1} us   p99 {f99:>9.1} us");
        println!(
            "fork+exec hello          n={execs:<5} p50 {:>9.3} ms   p99 {:>9.3} ms   (a new VM each time)",
            x50 / 1e3,
            x99 / 1e3
        );
        println!(
            "reset+exec hello         n={execs:<5} p50 {:>9.3} ms   p99 {:>9.3} ms   ({reused} of {execs} in a reset fork; the reset itself p50 {:.3} ms, p99 {:.3} ms)",
            e50 / 1e3,
            e99 / 1e3,
            r50 / 1e3,
            r99 / 1e3
        );
        println!(
            "reset parts (p50 each)   {:.0} pages restored ({:.0} differed), {:.0} PTE writes, {:.0} new tables: dirty log {:.1} us, page copy {:.1} us, shadow MMU (PTE writer) {:.1} us, vCPU state {:.1} us, kernel state clone {:.1} us; total p50 {:.1} us",
            parts[0], parts[9], parts[1], parts[2], parts[3], parts[4], parts[5], parts[6], parts[7], parts[8]
        );
        println!("reset+exec {heavy_label:<15} p50 {:>9.3} ms", n50 / 1e3);
        for r in &rounds {
            println!(
                "{:<5} live forks         created in {:.1} ms, {:.0} us per fork ({} in a VM from the pool of {vm_pool}), host RSS {} KiB per fork (anon {}, file {}, shmem {})",
                r.n,
                r.time.as_secs_f64() * 1e3,
                r.time.as_secs_f64() * 1e6 / r.n as f64,
                r.from_pool,
                r.rss_per_fork / 1024,
                r.rss_parts[0] / 1024,
                r.rss_parts[1] / 1024,
                r.rss_parts[2] / 1024
            );
        }
        println!(
            "isolation check          {}",
            if isolated { "ok" } else { "FAILED" }
        );
    }
    if !isolated {
        bail!("isolation check failed: {:?} then {:?}", w.stdout, r.stdout);
    }
    Ok(())
}
