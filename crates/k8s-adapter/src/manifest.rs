//! Generic Kubernetes manifest reader.
//!
//! [`Manifests`] reads files of multi-document YAML (documents separated by `---`; empty
//! documents are ignored but still counted) and flattens `kind: List` objects into their
//! items. Every object becomes a [`Document`]: its [`Location`] (file, document index, item
//! index inside a list, `apiVersion`, `kind`, namespace, name) and its raw JSON value. Typed
//! access goes through [`Document::decode`] / [`Manifests::decode_all`] into any
//! [`k8s_openapi`] type; a decode error names the file, the document, the object and the
//! field path (`spec.ingress[0].ports[1].port`).
//!
//! The reader does not know which kinds its caller understands: the caller decodes the kinds it
//! wants and asks [`Manifests::unrecognized`] for warnings about the rest. The library never
//! prints; warnings are values returned to the caller.
//!
//! Reading is all-or-nothing per call: when a file or document is invalid, the
//! [`Manifests`] value is left exactly as it was.
//!
//! ```
//! use k8s_openapi::api::core::v1::Pod;
//! use strata_k8s::manifest::{Kind, Manifests};
//!
//! let mut manifests = Manifests::new();
//! manifests
//!     .add_str(
//!         "cluster.yaml",
//!         "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop}\n---\n\
//!          apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
//!     )
//!     .unwrap();
//! let pods = manifests.decode_all::<Pod>().unwrap();
//! assert_eq!(pods[0].object.metadata.name.as_deref(), Some("web"));
//! let warnings = manifests.unrecognized(&[Kind::of::<Pod>()]);
//! assert_eq!(warnings.len(), 1);
//! assert!(warnings[0].to_string().contains("Widget"));
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::Resource;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// Where an object comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file (or the name given to [`Manifests::add_str`]).
    pub file: PathBuf,
    /// Index of the YAML document in the file, from 0 (displayed from 1).
    pub document: usize,
    /// Index of the object inside a `kind: List` document, from 0 (displayed from 1).
    pub item: Option<usize>,
    /// The object's `apiVersion`.
    pub api_version: String,
    /// The object's `kind`.
    pub kind: String,
    /// `metadata.namespace`, when present.
    pub namespace: Option<String>,
    /// `metadata.name`, when present.
    pub name: Option<String>,
}

impl Location {
    /// `namespace/name`, or just `name` for cluster-scoped objects, or `<unnamed>`.
    pub fn object_name(&self) -> String {
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => format!("{ns}/{name}"),
            (None, Some(name)) => name.clone(),
            (_, None) => "<unnamed>".to_string(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file.display(), self.document + 1)?;
        if let Some(item) = self.item {
            write!(f, " item {}", item + 1)?;
        }
        write!(f, " ({} {})", self.kind, self.object_name())
    }
}

/// An `apiVersion` and `kind` pair, as understood by a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kind {
    /// `apiVersion`, such as `networking.k8s.io/v1`.
    pub api_version: &'static str,
    /// `kind`, such as `NetworkPolicy`.
    pub kind: &'static str,
}

impl Kind {
    /// The kind of a k8s-openapi resource type.
    pub fn of<K: Resource>() -> Self {
        Kind {
            api_version: K::API_VERSION,
            kind: K::KIND,
        }
    }
}

/// One object of a manifest, located, not yet decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Where it comes from.
    pub location: Location,
    /// The object as JSON.
    pub object: serde_json::Value,
}

impl Document {
    /// Whether this object is of the resource type `K` (same `apiVersion` and `kind`).
    pub fn is<K: Resource>(&self) -> bool {
        self.location.kind == K::KIND && self.location.api_version == K::API_VERSION
    }

    /// Decodes the object into `K`. The error names the location and the field path.
    pub fn decode<K: DeserializeOwned>(&self) -> Result<K, Error> {
        serde_path_to_error::deserialize::<_, K>(&self.object).map_err(|err| {
            let field = err.path().to_string();
            let source = err.into_inner();
            Error::Decode {
                location: Box::new(self.location.clone()),
                field,
                message: source.to_string(),
                source,
            }
        })
    }
}

/// A decoded object with its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    /// Where it comes from.
    pub location: Location,
    /// The decoded object.
    pub object: T,
}

/// A warning about an object the caller did not use (an unknown kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The object.
    pub location: Location,
    /// What happened to it.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// The objects of a set of manifests, in reading order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    documents: Vec<Document>,
}

impl Manifests {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every file in order. Fails on the first invalid file.
    pub fn read_files<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Result<Self, Error> {
        let mut manifests = Self::new();
        for path in paths {
            manifests.read_file(path.as_ref())?;
        }
        Ok(manifests)
    }

    /// Reads one file and appends its objects. On error nothing is appended.
    pub fn read_file(&mut self, path: &Path) -> Result<usize, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.add_str(path, &text)
    }

    /// Parses `text` as if it were the content of `file` and appends its objects; returns how
    /// many were appended. On error nothing is appended.
    pub fn add_str(&mut self, file: impl Into<PathBuf>, text: &str) -> Result<usize, Error> {
        let file = file.into();
        let mut parsed = Vec::new();
        for (document, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = serde_yaml::Value::deserialize(de).map_err(|source| Error::Yaml {
                file: file.clone(),
                document,
                source,
            })?;
            if value.is_null() {
                continue;
            }
            let json = serde_json::to_value(&value).map_err(|err| Error::NotAnObject {
                file: file.clone(),
                document,
                item: None,
                reason: format!("not representable as JSON: {err}"),
            })?;
            flatten(&file, document, None, json, &mut parsed)?;
        }
        let count = parsed.len();
        self.documents.extend(parsed);
        Ok(count)
    }

    /// All objects, in reading order (list items in place of their list).
    pub fn documents(&self) -> &[Document] {
        &self.documents
    }

    /// Decodes every object of type `K`, in reading order. Fails on the first invalid one.
    pub fn decode_all<K: Resource + DeserializeOwned>(&self) -> Result<Vec<Located<K>>, Error> {
        self.documents
            .iter()
            .filter(|doc| doc.is::<K>())
            .map(|doc| {
                Ok(Located {
                    location: doc.location.clone(),
                    object: doc.decode::<K>()?,
                })
            })
            .collect()
    }

    /// One warning per object whose kind is not among `known`: it was skipped.
    pub fn unrecognized(&self, known: &[Kind]) -> Vec<Warning> {
        self.documents
            .iter()
            .filter(|doc| {
                !known.iter().any(|k| {
                    k.kind == doc.location.kind && k.api_version == doc.location.api_version
                })
            })
            .map(|doc| Warning {
                location: doc.location.clone(),
                message: format!(
                    "skipped: kind {} of {} is not understood here",
                    doc.location.kind, doc.location.api_version
                ),
            })
            .collect()
    }
}

fn flatten(
    file: &Path,
    document: usize,
    item: Option<usize>,
    value: serde_json::Value,
    out: &mut Vec<Document>,
) -> Result<(), Error> {
    let not_object = |reason: String| Error::NotAnObject {
        file: file.to_path_buf(),
        document,
        item,
        reason,
    };
    let map = value
        .as_object()
        .ok_or_else(|| not_object("not a mapping".to_string()))?;
    let string_field = |name: &str| -> Result<String, Error> {
        match map.get(name) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(not_object(format!(
                "field `{name}` is not a non-empty string"
            ))),
            None => Err(not_object(format!("field `{name}` is missing"))),
        }
    };
    let api_version = string_field("apiVersion")?;
    let kind = string_field("kind")?;
    if kind == "List" && item.is_none() {
        let items = match map.get("items") {
            Some(serde_json::Value::Array(items)) => items.clone(),
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(_) => {
                return Err(not_object(
                    "field `items` of a List is not a sequence".into(),
                ));
            }
        };
        for (index, object) in items.into_iter().enumerate() {
            flatten(file, document, Some(index), object, out)?;
        }
        return Ok(());
    }
    let metadata = map.get("metadata");
    let meta_string = |name: &str| {
        metadata
            .and_then(|m| m.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let location = Location {
        file: file.to_path_buf(),
        document,
        item,
        api_version,
        kind,
        namespace: meta_string("namespace"),
        name: meta_string("name"),
    };
    out.push(Document {
        location,
        object: value,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use k8s_openapi::api::networking::v1::NetworkPolicy;

    const TEXT: &str = "\
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
# empty document follows
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: shop}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: d, namespace: shop}
";

    #[test]
    fn reads_documents_and_flattens_lists() {
        let mut m = Manifests::new();
        assert_eq!(m.add_str("a.yaml", TEXT).unwrap(), 3);
        let docs = m.documents();
        assert_eq!(docs[0].location.kind, "Namespace");
        assert_eq!(docs[0].location.document, 0);
        assert_eq!(docs[1].location.item, Some(0));
        assert_eq!(docs[1].location.document, 2);
        assert_eq!(docs[1].location.object_name(), "shop/web");
        assert_eq!(
            docs[2].location.to_string(),
            "a.yaml: document 3 item 2 (Deployment shop/d)"
        );
        assert_eq!(m.decode_all::<Namespace>().unwrap().len(), 1);
        assert_eq!(m.decode_all::<Pod>().unwrap().len(), 1);
        let warnings = m.unrecognized(&[Kind::of::<Namespace>(), Kind::of::<Pod>()]);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].location.kind, "Deployment");
    }

    #[test]
    fn decode_error_names_file_document_object_and_field() {
        let mut m = Manifests::new();
        m.add_str(
            "p.yaml",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: ns}\n\
             spec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n      endPort: many\n",
        )
        .unwrap();
        let err = m.decode_all::<NetworkPolicy>().unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "p.yaml: document 1 (NetworkPolicy ns/np): field `spec.ingress[0].ports[0].endPort`"
            ),
            "{text}"
        );
    }

    #[test]
    fn invalid_input_leaves_the_set_untouched() {
        let mut m = Manifests::new();
        m.add_str("a.yaml", TEXT).unwrap();
        let before = m.clone();
        let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n---\n[1, 2\n";
        let err = m.add_str("b.yaml", bad).unwrap_err();
        assert!(matches!(err, Error::Yaml { document: 1, .. }), "{err}");
        assert_eq!(m, before);
        let err = m.add_str("c.yaml", "kind: Pod\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "c.yaml: document 1: field `apiVersion` is missing"
        );
        let err = m.add_str("d.yaml", "- 1\n").unwrap_err();
        assert!(err.to_string().contains("not a mapping"));
        assert_eq!(m, before);
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = Manifests::read_files(["/nonexistent/strata.yaml"]).unwrap_err();
        assert!(matches!(err, Error::Read { .. }));
        assert!(
            err.to_string()
                .starts_with("/nonexistent/strata.yaml: cannot read")
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let mut m = Manifests::new();
            let _ = m.add_str("x.yaml", &text);
        }
    }
}
