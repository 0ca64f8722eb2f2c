//! `zeroboot image`: build, find and list runtime images (root filesystems
//! assembled from Debian packages, see the `zeroboot-image` crate).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use zeroboot_image::{Progress, Recipe};

/// `zeroboot image ...`
#[derive(Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub cmd: ImageCmd,
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Build an image (unless it is built already) and print the path of
    /// its root filesystem.
    Build(RecipeArgs),
    /// Print the path of a built image's root filesystem (exit 1 if it is
    /// not built).
    Path(RecipeArgs),
    /// List the built images with their size.
    List(CacheArg),
}

/// Which image: a name and extra packages.
#[derive(Args, Debug)]
pub struct RecipeArgs {
    /// `python` (python3 + numpy), `node` (nodejs), or a name of your own
    /// (then list its packages with --apt).
    pub name: String,
    /// A Debian package to add, with its dependencies (repeatable).
    #[arg(long = "apt", value_name = "PKG")]
    pub apt: Vec<String>,
    /// A pip package to add as binary wheels, with its dependencies
    /// (repeatable; `pandas` or `pandas==2.0.3`).
    #[arg(long = "pip", value_name = "PKG")]
    pub pip: Vec<String>,
    #[command(flatten)]
    pub cache: CacheArg,
}

#[derive(Args, Debug)]
pub struct CacheArg {
    /// The cache directory [default: $ZEROBOOT_CACHE, else
    /// $XDG_CACHE_HOME/zeroboot, else ~/.cache/zeroboot].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl CacheArg {
    fn dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(zeroboot_image::default_cache_dir)
    }
}

impl RecipeArgs {
    fn recipe(&self) -> anyhow::Result<Recipe> {
        Ok(Recipe::named(&self.name, &self.apt, &self.pip)?)
    }

    /// The `zeroboot image build ...` command line for these arguments.
    fn build_command(&self) -> String {
        let mut s = format!("zeroboot image build {}", self.name);
        for p in &self.apt {
            s.push_str(&format!(" --apt {p}"));
        }
        for p in &self.pip {
            s.push_str(&format!(" --pip '{p}'"));
        }
        if let Some(d) = &self.cache.cache_dir {
            s.push_str(&format!(" --cache-dir {}", d.display()));
        }
        s
    }
}

/// Runs an `image` subcommand; returns the exit code.
pub fn run(args: ImageArgs) -> anyhow::Result<i32> {
    match args.cmd {
        ImageCmd::Build(a) => {
            let recipe = a.recipe()?;
            let cache = a.cache.dir();
            let existed = zeroboot_image::find(&recipe, &cache).is_some();
            let progress = CliProgress::new();
            let started = Instant::now();
            let result = zeroboot_image::ensure(&recipe, &cache, &progress);
            progress.done();
            let root = result.with_context(|| format!("building image `{}`", recipe.name))?;
            if !existed {
                eprintln!(
                    "zeroboot: image `{}` ready in {:.1}s",
                    recipe.name,
                    started.elapsed().as_secs_f64()
                );
            }
            println!("{}", root.display());
            Ok(0)
        }
        ImageCmd::Path(a) => {
            let recipe = a.recipe()?;
            let cache = a.cache.dir();
            match zeroboot_image::find(&recipe, &cache) {
                Some(root) => {
                    println!("{}", root.display());
                    Ok(0)
                }
                None => {
                    eprintln!(
                        "zeroboot: image `{}` is not built in {}; build it with `{}`",
                        recipe.name,
                        cache.display(),
                        a.build_command()
                    );
                    Ok(1)
                }
            }
        }
        ImageCmd::List(c) => {
            let cache = c.dir();
            let images = zeroboot_image::list(&cache)?;
            if images.is_empty() {
                eprintln!(
                    "zeroboot: no images in {} (build one with `zeroboot image build python`)",
                    cache.display()
                );
                return Ok(0);
            }
            let width = images
                .iter()
                .map(|i| i.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            println!("{:width$}  {:16}  {:>10}  PATH", "NAME", "HASH", "SIZE");
            for i in images {
                println!(
                    "{:width$}  {:16}  {:>10}  {}",
                    i.name,
                    i.hash,
                    HumanBytes(i.size).to_string(),
                    i.rootfs.display()
                );
            }
            Ok(0)
        }
    }
}

/// The rootfs of `recipe`, built first (with progress on stderr) if needed.
pub fn ensure_image(recipe: &Recipe, cache: &std::path::Path) -> anyhow::Result<PathBuf> {
    if let Some(root) = zeroboot_image::find(recipe, cache) {
        return Ok(root);
    }
    eprintln!("zeroboot: building image `{}` (first use)", recipe.name);
    let progress = CliProgress::new();
    let started = Instant::now();
    let result = zeroboot_image::ensure(recipe, cache, &progress);
    progress.done();
    let root = result.with_context(|| format!("building image `{}`", recipe.name))?;
    eprintln!(
        "zeroboot: image `{}` ready in {:.1}s",
        recipe.name,
        started.elapsed().as_secs_f64()
    );
    Ok(root)
}

/// Build progress on stderr: a bar on a terminal, else one line per stage.
struct CliProgress {
    bar: Option<ProgressBar>,
}

impl CliProgress {
    fn new() -> CliProgress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(spinner_style());
            bar
        });
        CliProgress { bar }
    }

    fn done(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {wide_msg:.dim}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner:.cyan} {prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} {wide_msg:.dim}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

impl Progress for CliProgress {
    fn stage(&self, name: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_style(spinner_style());
                bar.set_length(0);
                bar.set_position(0);
                bar.set_prefix(name.to_string());
                bar.set_message("");
                bar.enable_steady_tick(Duration::from_millis(100));
            }
            None => eprintln!("zeroboot: image: {name}"),
        }
    }

    fn set_total(&self, total: u64) {
        if let Some(bar) = &self.bar {
            if total > 0 {
                bar.set_style(bar_style());
                bar.set_length(total);
                bar.set_position(0);
            }
        }
    }

    fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    fn message(&self, msg: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(msg.to_string());
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.set_message("");
        }
    }
}
