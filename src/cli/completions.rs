//! `wayback completions SHELL` and `wayback man`: generated from the clap definitions, so they
//! never drift from the commands (packagers run both at build time).

use clap::CommandFactory;

/// Arguments of `completions`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

/// Prints the completion script on stdout.
pub fn run(a: Args) -> anyhow::Result<i32> {
    let mut cmd = crate::cli::Cli::command();
    // Rendered first: `generate` panics on a write error, such as a closed pipe.
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "wayback", &mut buf);
    std::io::Write::write_all(&mut std::io::stdout(), &buf)?;
    Ok(0)
}

/// Arguments of `man`.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write wayback.1 and wayback-SUBCOMMAND.1 into this directory instead of printing
    /// wayback(1) on stdout.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

/// Prints wayback(1), or writes every page into `--dir`.
pub fn run_man(a: ManArgs) -> anyhow::Result<i32> {
    use anyhow::Context;
    let cmd = crate::cli::Cli::command();
    let Some(dir) = a.dir else {
        clap_mangen::Man::new(cmd).render(&mut std::io::stdout().lock())?;
        return Ok(0);
    };
    let write = |name: &str, c: clap::Command| -> anyhow::Result<()> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).render(&mut buf)?;
        let p = dir.join(format!("{name}.1"));
        std::fs::write(&p, buf).with_context(|| format!("writing {}", p.display()))
    };
    write("wayback", cmd.clone())?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap wants 'static names here; one short-lived process, so leaking is fine.
        let name: &'static str = Box::leak(format!("wayback-{}", sub.get_name()).into_boxed_str());
        write(name, sub.clone().name(name).bin_name(name))?;
    }
    Ok(0)
}
