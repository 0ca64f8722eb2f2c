//! `zeroboot template`: create templates, and find them for `exec`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use zeroboot_engine::{Language, Template, TemplateOptions};

#[derive(Args)]
pub struct TemplateArgs {
    #[command(subcommand)]
    cmd: TemplateCmd,
}

#[derive(Subcommand)]
enum TemplateCmd {
    /// Boot a language's agent and freeze it as a template.
    Create {
        /// The language: python, node or code-interpreter.
        language: String,
    },
}

/// The template for `lang`: loaded from the cache, or created (and its
/// image built) first.
pub fn load_or_create(lang: Language) -> Result<Template> {
    let recipe = lang.recipe();
    let cache = crate::cache_dir();
    let root = crate::image::ensure_image(&recipe, &cache)?;
    let dir = Template::dir(&cache, lang, &root);
    let (t, created) = Template::open(lang, &root, &cache, &TemplateOptions::default())
        .with_context(|| format!("creating the {} template", lang.name()))?;
    if created {
        eprintln!(
            "zeroboot: template {} created in {:.2} s and saved to {}",
            lang.name(),
            t.created_in.as_secs_f64(),
            dir.display()
        );
    }
    Ok(t)
}

pub fn run(a: TemplateArgs) -> Result<i32> {
    match a.cmd {
        TemplateCmd::Create { language } => {
            let lang = Language::parse(&language).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown language {language:?} (known: python, node, code-interpreter)"
                )
            })?;
            let recipe = lang.recipe();
            let cache = crate::cache_dir();
            let root = crate::image::ensure_image(&recipe, &cache)?;
            let mut t = Template::create(lang, &root, &TemplateOptions::default())
                .with_context(|| format!("creating the {} template", lang.name()))?;
            let dir = t.save(&cache, &root)?;
            eprintln!(
                "zeroboot: template {} created in {:.3} s ({} MiB of guest memory), saved to {}",
                lang.name(),
                t.created_in.as_secs_f64(),
                t.memory_bytes() >> 20,
                dir.display()
            );
            println!("{}", dir.display());
            Ok(0)
        }
    }
}
