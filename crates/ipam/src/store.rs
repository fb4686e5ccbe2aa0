//! Persistence: the [`Store`] trait, an in-memory store and a durable one on redb.
//!
//! redb is the embedded transactional store: pure Rust (no C library to build or ship),
//! ACID write transactions whose commit is durable (fsync'd) before it returns, and a crash at
//! any point leaves the last committed transaction intact. That is exactly what IPAM needs:
//! one transaction per planned [`Change`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::record::{Op, Record};
use crate::{Error, Result};

/// A place where IPAM records live.
///
/// `commit` must apply all ops or none, and be durable when it returns `Ok`.
pub trait Store {
    /// Every stored record, in key order.
    fn load(&self) -> Result<Vec<Record>>;
    /// Applies `ops` atomically and durably.
    fn commit(&mut self, ops: &[Op]) -> Result<()>;
}

/// An in-memory store; clones share the same records (a "restart" reopens a clone).
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    records: Arc<Mutex<BTreeMap<String, Record>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Vec<Record>> {
        let records = self.records.lock().map_err(|_| Error::Store {
            message: "memory store poisoned".to_owned(),
        })?;
        Ok(records.values().cloned().collect())
    }

    fn commit(&mut self, ops: &[Op]) -> Result<()> {
        let mut records = self.records.lock().map_err(|_| Error::Store {
            message: "memory store poisoned".to_owned(),
        })?;
        for op in ops {
            match op {
                Op::Put(record) => {
                    records.insert(record.key().to_string(), record.clone());
                }
                Op::Delete(key) => {
                    records.remove(&key.to_string());
                }
            }
        }
        Ok(())
    }
}

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

fn store_err(what: &str, err: impl std::fmt::Display) -> Error {
    Error::Store {
        message: format!("{what}: {err}"),
    }
}

/// A durable store in one redb file. Clones share the open database.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<RedbStore> {
        let db = Database::create(path)
            .map_err(|e| store_err(&format!("open {}", path.display()), e))?;
        Ok(RedbStore { db: Arc::new(db) })
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Vec<Record>> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| store_err("begin read", e))?;
        let table = match txn.open_table(RECORDS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(store_err("open table", e)),
        };
        let mut records = Vec::new();
        for entry in table.iter().map_err(|e| store_err("iterate", e))? {
            let (key, value) = entry.map_err(|e| store_err("read", e))?;
            let record: Record =
                serde_json::from_slice(value.value()).map_err(|e| Error::Corrupt {
                    key: key.value().to_owned(),
                    reason: e.to_string(),
                })?;
            if record.key().to_string() != key.value() {
                return Err(Error::Corrupt {
                    key: key.value().to_owned(),
                    reason: format!("holds the record of {}", record.key()),
                });
            }
            records.push(record);
        }
        Ok(records)
    }

    fn commit(&mut self, ops: &[Op]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let txn = self
            .db
            .begin_write()
            .map_err(|e| store_err("begin write", e))?;
        {
            let mut table = txn
                .open_table(RECORDS)
                .map_err(|e| store_err("open table", e))?;
            for op in ops {
                match op {
                    Op::Put(record) => {
                        let value =
                            serde_json::to_vec(record).map_err(|e| store_err("encode", e))?;
                        table
                            .insert(record.key().to_string().as_str(), value.as_slice())
                            .map_err(|e| store_err("insert", e))?;
                    }
                    Op::Delete(key) => {
                        table
                            .remove(key.to_string().as_str())
                            .map_err(|e| store_err("remove", e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| store_err("commit", e))
    }
}
