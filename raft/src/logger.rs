//! raft-rs logs through `slog`; this forwards its records to `tracing`
//! (target `raft`), so one subscriber sees everything.

use std::fmt::{self, Write};

use slog::{Drain, Key, OwnedKVList, Record, Serializer, KV};

struct TracingDrain;

struct KvText(String);

impl Serializer for KvText {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments) -> slog::Result {
        // Writing into a String cannot fail.
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut text = KvText(format!("{}", record.msg()));
        let _ = record.kv().serialize(record, &mut text);
        let _ = values.serialize(record, &mut text);
        let text = text.0;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{text}")
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{text}"),
            slog::Level::Info => tracing::info!(target: "raft", "{text}"),
            slog::Level::Debug => tracing::debug!(target: "raft", "{text}"),
            slog::Level::Trace => tracing::trace!(target: "raft", "{text}"),
        }
        Ok(())
    }
}

/// A logger for raft-rs tagged with the node id.
pub(crate) fn raft_logger(id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!("raft_id" => id))
}
