//! One turn at a time per user, in this instance: what keeps a burst of
//! clicks (double clicks, tabs, a script) from each holding a connection of
//! the small lock pool while it waits for the user's advisory lock. Later
//! clicks wait here, holding nothing, for the one ahead; each turn may leave
//! a value for the next (customer creation leaves its answer). A user's entry
//! goes away with the last click waiting on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{Mutex as Turn, OwnedMutexGuard};

use crate::ids::AccountId;

/// The turns in flight, one per user, each holding a `T` left by the last.
pub struct Turns<T>(Arc<Mutex<HashMap<AccountId, Weak<Turn<T>>>>>);

impl<T> Clone for Turns<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Default for Turns<T> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<T: Default> Turns<T> {
    /// Waits for `user`'s turn; the guard holds what the previous turn left.
    pub(crate) async fn turn(&self, user: &AccountId) -> OwnedMutexGuard<T> {
        let turn = {
            // Poisoned only by a panic elsewhere; the map is still sound.
            let mut turns = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            turns.retain(|_, turn| turn.strong_count() > 0);
            match turns.get(user).and_then(Weak::upgrade) {
                Some(turn) => turn,
                None => {
                    let turn = Arc::new(Turn::new(T::default()));
                    turns.insert(user.clone(), Arc::downgrade(&turn));
                    turn
                }
            }
        };
        turn.lock_owned().await
    }
}
