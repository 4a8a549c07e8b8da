/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend's configuration cannot work.
    #[error("invalid backend configuration: {0}")]
    Config(String),
    /// The store could not be reached or answered with an error.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store refused the request as invalid (a part missing or not matching).
    #[error("refused by the store: {0}")]
    Refused(String),
    /// The object does not exist (the message is its key).
    #[error("object not found: {0}")]
    NotFound(String),
    /// A local I/O failure.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}
