//! Who may do what where: the role rules valet applies on top of a token's own
//! (attenuable) checks.

use std::fmt;

use super::{DeviceId, ServiceName, TenantId};

/// Who is calling, as proven by the token's authority block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The tenant the token belongs to.
    pub tenant: TenantId,
    /// A device or a tenant service.
    pub principal: Principal,
}

/// The two kinds of callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A device: its own root, plus reading the tenant's shared root.
    Device(DeviceId),
    /// A tenant service: everything inside its tenant.
    Service(ServiceName),
}

/// A storage root inside a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// One device's files.
    Device(DeviceId),
    /// Files the tenant's services share with all its devices.
    Shared,
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Read metadata or download.
    Read,
    /// Create or complete an upload.
    Write,
    /// Delete a file.
    Delete,
    /// List files.
    List,
}

/// The outcome of the role rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead (the token's own checks still apply).
    Allow,
    /// The caller can see the target but may not do this: 403.
    Forbidden,
    /// The caller may not know the target exists: 404.
    Hidden,
}

impl Operation {
    /// The name used in the authorizer's `operation(...)` fact.
    pub fn as_str(&self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::Delete => "delete",
            Operation::List => "list",
        }
    }
}

impl Root {
    /// The authorizer's `resource(...)` value: `<tenant>/devices/<device>` or `<tenant>/shared`.
    pub fn resource(&self, tenant: &TenantId) -> String {
        match self {
            Root::Device(device) => format!("{tenant}/devices/{device}"),
            Root::Shared => format!("{tenant}/shared"),
        }
    }

    /// The device id of a device root; `None` for the shared root.
    pub fn device(&self) -> Option<&DeviceId> {
        match self {
            Root::Device(d) => Some(d),
            Root::Shared => None,
        }
    }
}

impl Identity {
    /// Applies the role rules to `operation` on `root` of `tenant`.
    pub fn may(&self, operation: Operation, tenant: &TenantId, root: &Root) -> Decision {
        if &self.tenant != tenant {
            return Decision::Hidden;
        }
        match (&self.principal, root) {
            (Principal::Service(_), _) => Decision::Allow,
            (Principal::Device(me), Root::Device(owner)) if me == owner => Decision::Allow,
            (Principal::Device(_), Root::Device(_)) => Decision::Hidden,
            (Principal::Device(_), Root::Shared) => match operation {
                Operation::Read | Operation::List => Decision::Allow,
                Operation::Write | Operation::Delete => Decision::Forbidden,
            },
        }
    }

    /// The root a caller writes to or lists by default: a device's own, none for a service.
    pub fn own_root(&self) -> Option<Root> {
        match &self.principal {
            Principal::Device(d) => Some(Root::Device(d.clone())),
            Principal::Service(_) => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.principal {
            Principal::Device(d) => write!(f, "{}/device:{d}", self.tenant),
            Principal::Service(s) => write!(f, "{}/service:{s}", self.tenant),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }
    fn d(s: &str) -> DeviceId {
        DeviceId::parse(s).unwrap()
    }
    fn device(tenant: &str, device: &str) -> Identity {
        Identity {
            tenant: t(tenant),
            principal: Principal::Device(d(device)),
        }
    }

    #[test]
    fn a_device_owns_its_root_and_reads_shared() {
        let me = device("acme", "dev-1");
        let mine = Root::Device(d("dev-1"));
        for op in [
            Operation::Read,
            Operation::Write,
            Operation::Delete,
            Operation::List,
        ] {
            assert_eq!(me.may(op, &t("acme"), &mine), Decision::Allow);
        }
        assert_eq!(
            me.may(Operation::Read, &t("acme"), &Root::Shared),
            Decision::Allow
        );
        assert_eq!(
            me.may(Operation::Write, &t("acme"), &Root::Shared),
            Decision::Forbidden
        );
        assert_eq!(
            me.may(Operation::Delete, &t("acme"), &Root::Shared),
            Decision::Forbidden
        );
    }

    #[test]
    fn others_are_hidden() {
        let me = device("acme", "dev-1");
        let other = Root::Device(d("dev-2"));
        assert_eq!(
            me.may(Operation::Read, &t("acme"), &other),
            Decision::Hidden
        );
        assert_eq!(
            me.may(Operation::Read, &t("globex"), &Root::Shared),
            Decision::Hidden
        );
        let svc = Identity {
            tenant: t("acme"),
            principal: Principal::Service(ServiceName::parse("fleet").unwrap()),
        };
        assert_eq!(
            svc.may(Operation::Delete, &t("acme"), &other),
            Decision::Allow
        );
        assert_eq!(
            svc.may(Operation::Read, &t("globex"), &other),
            Decision::Hidden
        );
    }

    #[test]
    fn resources_name_the_root() {
        assert_eq!(
            Root::Device(d("dev-1")).resource(&t("acme")),
            "acme/devices/dev-1"
        );
        assert_eq!(Root::Shared.resource(&t("acme")), "acme/shared");
    }
}
