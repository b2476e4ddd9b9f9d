#pragma once

// The item that flows through the pipeline: a page of rows and what the transform made of
// it, owned by one stage at a time.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "keymig/db/batch.hpp"
#include "keymig/db/chunks.hpp"
#include "keymig/db/rows.hpp"
#include "keymig/engine/engine.hpp"
#include "keymig/engine/mfa_admin.hpp"

namespace keymig::engine::detail {

/// Per-batch counts, summed by the serial sink.
struct Tally {
  std::int64_t rows = 0;
  std::int64_t empty = 0;
  std::int64_t undecryptable = 0;
  std::int64_t acknowledged = 0;  // of the undecryptable rows, those in keymig.acknowledged
  std::int64_t acknowledged_unknown_key = 0;  // of those, well-formed (reason unknown_key)
  std::int64_t active = 0;                    // under the active key
  std::int64_t active_ok = 0;                 // active and nothing to write (flag fine or no flag)
  std::int64_t rolling = 0;                   // under a rolling key
  std::int64_t respelled = 0;   // migrate: active, non-canonical text written back canonical
  std::int64_t flag_wrong = 0;  // active, flag column not true
  std::int64_t verified_ok = 0;
  std::int64_t double_encrypted = 0;  // readable, and the plaintext is itself a token
  std::size_t longest_token = 0;      // scan: canonical characters of the longest readable token
  std::vector<std::int64_t> by_key;   // index = key_index
  std::map<std::string, std::int64_t> by_reason;
  // Clear-text timestamps of the well-formed tokens no configured key verifies (0: none):
  // when the key that made them was in use, to name it.
  std::uint64_t unknown_key_first = 0, unknown_key_last = 0;
  std::int64_t classify_ops = 0, decrypt_ops = 0, encrypt_ops = 0;
  void add(const Tally& other);
};

/// Ids of a target's acknowledged undecryptable rows (db::acknowledged_ids).
using AcknowledgedIds = std::unordered_set<std::string>;

/// A page of rows on its way through the pipeline.
struct Batch {
  std::vector<db::Row> rows;
  std::vector<db::Change> changes;  // migrate: what to write
  std::vector<UndecryptableRow> undecryptable;
  std::vector<std::string> needs_rolling;     // verify: ids
  std::vector<std::string> double_encrypted;  // scan, verify: ids
  std::vector<UserStatus> users;              // status: one per row, in row order
  Tally tally;
  std::optional<db::ChunkStep> chunk;  // run mode: the checkpoint step this batch makes
};

}  // namespace keymig::engine::detail
