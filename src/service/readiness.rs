//! Readiness: the database, the broker, the cache and every storage backend.

use super::*;

/// State of one dependency, for `/readyz`.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked (`database`, `cache`, `storage:<name>`).
    pub name: String,
    /// `None` when healthy, else why not.
    pub error: Option<String>,
    /// Whether valet cannot serve without it (the cache is optional: the
    /// database answers when it is down).
    pub required: bool,
}

impl FileService {
    /// Checks the database and every storage backend.
    pub async fn readiness(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        let database = match self.store.send(Ping).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        checks.push(Check {
            name: "database".into(),
            error: database,
            required: true,
        });
        // Events wait in the outbox while the broker is away: reported, not required.
        if let Ok(Some(broker)) = self.notifier.send(BrokerStatus).await {
            checks.push(Check {
                name: "broker".into(),
                error: broker.err(),
                required: false,
            });
        }
        checks.push(Check {
            name: format!("cache:{}", self.cache.kind()),
            error: self.cache.ping().await.err(),
            required: false,
        });
        for (name, backend) in self.backends.iter() {
            checks.push(Check {
                name: format!("storage:{name}"),
                error: backend.probe().await.err().map(|e| e.to_string()),
                required: true,
            });
        }
        checks
    }
}
