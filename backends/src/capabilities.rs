//! What a backend can do, declared as data so the service asks instead of testing
//! kind names.

/// The features of one store that change how valet drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// A signed upload admits only the declared length.
    pub binds_size: bool,
    /// A signed upload admits only a body with the declared SHA-256.
    pub binds_sha256: bool,
    /// The store reports an object's SHA-256 without reading it back.
    pub reports_sha256: bool,
    /// valet itself serves the signed requests (the local data plane).
    pub serves_data_plane: bool,
    /// Limits of uploads in parts, when the store has them.
    pub multipart: Option<MultipartLimits>,
}

/// Bounds a store puts on uploads in parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultipartLimits {
    /// Smallest part except the last, in bytes.
    pub min_part_size: u64,
    /// Largest part, in bytes.
    pub max_part_size: u64,
    /// Most parts one upload may have.
    pub max_parts: u64,
}

/// Where a backend keeps its objects, as events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Container<'a> {
    /// The event field naming it: `bucket` (S3) or `container` (Azure).
    pub field: &'static str,
    /// Its name.
    pub name: &'a str,
}
