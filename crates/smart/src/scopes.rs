//! SMART scopes: `(patient|user|system)/(Type|*).(cruds subset)`, with v1 suffixes
//! (`read`, `write`, `*`) mapped to v2 as the spec says (`.rs`, `.cud`, `.cruds`).

use std::fmt;

/// Whose data a resource scope reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeContext {
    Patient,
    User,
    System,
}

/// One permission letter of `cruds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Permission {
    fn letter(self) -> char {
        match self {
            Permission::Create => 'c',
            Permission::Read => 'r',
            Permission::Update => 'u',
            Permission::Delete => 'd',
            Permission::Search => 's',
        }
    }
}

/// A parsed resource scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    pub context: ScopeContext,
    /// A resource type, or `*`.
    pub resource_type: String,
    pub permissions: Vec<Permission>,
    /// Whether the scope was written with v1 suffixes.
    pub v1: bool,
}

impl ResourceScope {
    /// Parses one scope string; `None` for non-resource scopes (`openid`, `launch`, …) and for
    /// malformed ones (the spec lets servers ignore those).
    pub fn parse(scope: &str) -> Option<Self> {
        let (context, rest) = scope.split_once('/')?;
        let context = match context {
            "patient" => ScopeContext::Patient,
            "user" => ScopeContext::User,
            "system" => ScopeContext::System,
            _ => return None,
        };
        // Granular query parameters (`?category=…`) narrow a scope; we do not widen on them.
        let rest = rest.split('?').next()?;
        let (resource_type, suffix) = rest.split_once('.')?;
        if resource_type != "*" && !fhir::resource::is_resource_type(resource_type) {
            return None;
        }
        let (permissions, v1) = match suffix {
            "read" => (vec![Permission::Read, Permission::Search], true),
            "write" => (vec![Permission::Create, Permission::Update, Permission::Delete], true),
            "*" => (ALL.to_vec(), true),
            letters => (parse_cruds(letters)?, false),
        };
        Some(Self { context, resource_type: resource_type.to_owned(), permissions, v1 })
    }

    /// Whether this scope grants `permission` on `resource_type`.
    pub fn grants(&self, resource_type: &str, permission: Permission) -> bool {
        (self.resource_type == "*" || self.resource_type == resource_type)
            && self.permissions.contains(&permission)
    }
}

const ALL: [Permission; 5] = [
    Permission::Create,
    Permission::Read,
    Permission::Update,
    Permission::Delete,
    Permission::Search,
];

/// `cruds` letters must be an in-order subset of `cruds`, each at most once.
fn parse_cruds(letters: &str) -> Option<Vec<Permission>> {
    let mut out = Vec::new();
    let mut rest = ALL.iter();
    for ch in letters.chars() {
        let permission = rest.by_ref().find(|p| p.letter() == ch)?;
        out.push(*permission);
    }
    (!out.is_empty()).then_some(out)
}

impl fmt::Display for ResourceScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let context = match self.context {
            ScopeContext::Patient => "patient",
            ScopeContext::User => "user",
            ScopeContext::System => "system",
        };
        let letters: String = self.permissions.iter().map(|p| p.letter()).collect();
        write!(f, "{context}/{}.{letters}", self.resource_type)
    }
}

/// A granted scope string, split and parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet {
    pub raw: Vec<String>,
    pub resources: Vec<ResourceScope>,
}

impl ScopeSet {
    pub fn parse(scope: &str) -> Self {
        let raw: Vec<String> = scope.split_whitespace().map(str::to_owned).collect();
        let resources = raw.iter().filter_map(|s| ResourceScope::parse(s)).collect();
        Self { raw, resources }
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.raw.iter().any(|s| s == scope)
    }

    /// The contexts under which `permission` on `resource_type` is granted.
    pub fn grants(&self, resource_type: &str, permission: Permission) -> Vec<ScopeContext> {
        self.resources
            .iter()
            .filter(|s| s.grants(resource_type, permission))
            .map(|s| s.context)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v2_scopes() {
        let s = ResourceScope::parse("patient/Observation.rs").unwrap_or_else(|| unreachable!());
        assert_eq!(s.context, ScopeContext::Patient);
        assert!(s.grants("Observation", Permission::Read));
        assert!(s.grants("Observation", Permission::Search));
        assert!(!s.grants("Observation", Permission::Create));
        assert!(!s.grants("Condition", Permission::Read));
        assert_eq!(s.to_string(), "patient/Observation.rs");
    }

    #[test]
    fn maps_v1_scopes() {
        let s = ResourceScope::parse("user/*.read").unwrap_or_else(|| unreachable!());
        assert!(s.v1 && s.grants("Condition", Permission::Search));
        let w = ResourceScope::parse("user/Condition.write").unwrap_or_else(|| unreachable!());
        assert!(
            w.grants("Condition", Permission::Create) && !w.grants("Condition", Permission::Read)
        );
    }

    #[test]
    fn refuses_malformed_and_out_of_order() {
        assert!(ResourceScope::parse("patient/Observation.sr").is_none());
        assert!(ResourceScope::parse("patient/Observation.rr").is_none());
        assert!(ResourceScope::parse("patient/observation.rs").is_none());
        assert!(ResourceScope::parse("launch/patient").is_none());
        assert!(ResourceScope::parse("openid").is_none());
    }

    #[test]
    fn granular_scope_keeps_its_permissions() {
        let s = ResourceScope::parse(
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        )
        .unwrap_or_else(|| unreachable!());
        assert!(s.grants("Observation", Permission::Read));
    }

    #[test]
    fn scope_set_reports_contexts() {
        let set = ScopeSet::parse("launch openid fhirUser patient/Patient.rs user/Practitioner.rs");
        assert!(set.contains("openid"));
        assert_eq!(set.grants("Patient", Permission::Read), vec![ScopeContext::Patient]);
        assert_eq!(set.grants("Practitioner", Permission::Search), vec![ScopeContext::User]);
        assert!(set.grants("Condition", Permission::Read).is_empty());
    }
}
