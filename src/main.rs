use clap::Parser;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = valet::cli::Cli::parse();
    match cli.run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
