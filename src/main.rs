use clap::Parser;

// glibc malloc showed as a fifth of valet's CPU under load; mimalloc's per-thread
// free lists fit a server that allocates small, short-lived objects on many threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = valet::cli::Cli::parse();
    cli.prepare_process();
    match cli.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
