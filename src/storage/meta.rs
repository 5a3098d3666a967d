//! Rows that are neither events nor projections: the admin token hash (`m/admin_token`) and when
//! each key was last used (`u/key/`). Written straight to the tree, not through the writer;
//! `verify` and `rebuild` ignore them. A row that does not decode is corruption, reported as
//! such: never read as absent.

use super::{Store, StoreError, keys};
use crate::crypto::TokenHash;
use crate::domain::KeyId;

impl Store {
    /// The hash of the generated admin token, if one is kept.
    pub fn admin_token(&self) -> Result<Option<TokenHash>, StoreError> {
        self.inner
            .db
            .get(keys::ADMIN_TOKEN)?
            .map(|v| {
                <[u8; 32]>::try_from(v.as_ref())
                    .map(TokenHash)
                    .map_err(|_| StoreError::Corrupt {
                        what: "admin token hash (m/admin_token)".into(),
                        reason: format!("{} bytes, not 32", v.len()),
                    })
            })
            .transpose()
    }

    pub fn set_admin_token(&self, hash: &TokenHash) -> Result<(), StoreError> {
        self.inner.db.insert(keys::ADMIN_TOKEN, &hash.0[..])?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// Forgets the generated admin token's hash, readable or not.
    pub fn clear_admin_token(&self) -> Result<(), StoreError> {
        if self.inner.db.remove(keys::ADMIN_TOKEN)?.is_some() {
            self.inner.db.flush()?;
        }
        Ok(())
    }

    /// Records when a key was last used. Best effort, not an event: it is operational metadata,
    /// written without waiting for a flush.
    pub fn touch_key(&self, key_id: &KeyId, unix_millis: i64) -> Result<(), StoreError> {
        self.inner
            .db
            .insert(keys::key_last_used(key_id), &unix_millis.to_be_bytes()[..])?;
        Ok(())
    }

    pub fn key_last_used(&self, key_id: &KeyId) -> Result<Option<i64>, StoreError> {
        let read = || {
            self.inner
                .db
                .get(keys::key_last_used(key_id))?
                .map(|v| {
                    <[u8; 8]>::try_from(v.as_ref())
                        .map(i64::from_be_bytes)
                        .map_err(|_| StoreError::Corrupt {
                            what: format!("last use of key {key_id}"),
                            reason: format!("{} bytes, not 8", v.len()),
                        })
                })
                .transpose()
        };
        read().map_err(|e| self.noticed(e, None))
    }
}
