//! An OpenAI-compatible fake agent backend, named by its behaviours.

#[derive(Debug, Clone, clap::Args)]
pub struct MockArgs {
    /// Address to listen on, e.g. 127.0.0.1:9001 (port 0 picks a free one).
    #[arg(long)]
    pub listen: std::net::SocketAddr,
}
