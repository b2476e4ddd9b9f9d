#include "transform.hpp"

#include <algorithm>

namespace keymig::engine::detail {

void Tally::add(const Tally& o) {
  rows += o.rows;
  empty += o.empty;
  undecryptable += o.undecryptable;
  acknowledged += o.acknowledged;
  acknowledged_unknown_key += o.acknowledged_unknown_key;
  active += o.active;
  active_ok += o.active_ok;
  rolling += o.rolling;
  respelled += o.respelled;
  flag_wrong += o.flag_wrong;
  verified_ok += o.verified_ok;
  double_encrypted += o.double_encrypted;
  longest_token = std::max(longest_token, o.longest_token);
  if (by_key.size() < o.by_key.size()) by_key.resize(o.by_key.size(), 0);
  for (std::size_t i = 0; i < o.by_key.size(); ++i) by_key[i] += o.by_key[i];
  for (const auto& [reason, n] : o.by_reason) by_reason[reason] += n;
  if (o.unknown_key_first != 0 &&
      (unknown_key_first == 0 || o.unknown_key_first < unknown_key_first))
    unknown_key_first = o.unknown_key_first;
  unknown_key_last = std::max(unknown_key_last, o.unknown_key_last);
  classify_ops += o.classify_ops;
  decrypt_ops += o.decrypt_ops;
  encrypt_ops += o.encrypt_ops;
}

namespace {

void note_undecryptable(Batch& b, const db::Row& row, crypto::Reason reason,
                        std::uint64_t timestamp, const AcknowledgedIds* acknowledged) {
  ++b.tally.undecryptable;
  ++b.tally.by_reason[crypto::reason_name(reason)];
  const bool known = acknowledged && acknowledged->count(row.id) > 0;
  if (known) ++b.tally.acknowledged;
  if (known && reason == crypto::Reason::unknown_key) ++b.tally.acknowledged_unknown_key;
  if (reason == crypto::Reason::unknown_key && timestamp != 0) {
    auto& t = b.tally;
    if (t.unknown_key_first == 0 || timestamp < t.unknown_key_first)
      t.unknown_key_first = timestamp;
    t.unknown_key_last = std::max(t.unknown_key_last, timestamp);
  }
  b.undecryptable.push_back({row.id, crypto::reason_name(reason), known});
}

// Counted and listed by id, never shown: the inner token is the secret's only form.
// The row's token as read becomes the compare-and-swap's old token.
void add_change(Batch& b, db::Row& row, SecretString new_token) {
  db::Change ch;
  ch.id = row.id;
  ch.old_token = std::move(row.token);
  ch.new_token = std::move(new_token);
  ch.old_flag = row.flag;
  b.changes.push_back(std::move(ch));
}

void note_double_encrypted(Batch& b, const db::Row& row) {
  ++b.tally.double_encrypted;
  b.double_encrypted.push_back(row.id);
}

}  // namespace

void transform(Batch& b, const crypto::KeyRing& keys, Mode mode, bool has_flag,
               const AcknowledgedIds* acknowledged) {
  // However the batch ends, no key schedule stays behind on this thread.
  struct ForgetKeySchedules {
    ~ForgetKeySchedules() { crypto::forget_key_schedules(); }
  } forget;
  if (mode == Mode::status) {
    // The admin view counts users, not rows: the sink adds each status to its report.
    b.users.reserve(b.rows.size());
    for (auto& row : b.rows) {
      b.users.push_back(classify_user(keys, std::move(row.id), std::move(row.username),
                                      row.token.view(), row.is_null, row.flag, has_flag,
                                      row.sysadmin));
      row.token.wipe();
    }
    return;
  }
  b.tally.by_key.assign(keys.rolling_count() + 1, 0);
  if (mode == Mode::migrate) b.changes.reserve(b.rows.size());
  for (auto& row : b.rows) {
    ++b.tally.rows;
    if (row.is_null || row.token.empty()) {
      ++b.tally.empty;
      continue;
    }
    const bool flag_true = row.flag.value_or(false);
    if (mode == Mode::verify) {
      ++b.tally.decrypt_ops;
      auto d = keys.decrypt_active(row.token.view());
      if (d.ok()) {
        if (crypto::is_token_text(d.plaintext.view())) note_double_encrypted(b, row);
        ++b.tally.by_key[0];
        ++b.tally.active;
        ++b.tally.verified_ok;
        if (has_flag && !flag_true) ++b.tally.flag_wrong;
        continue;
      }
      ++b.tally.classify_ops;
      auto c = keys.classify_deep(row.token.view());
      if (c.reason == crypto::Reason::ok && c.key_index > 0) {
        if (c.double_encrypted) note_double_encrypted(b, row);
        ++b.tally.by_key[c.key_index];
        ++b.tally.rolling;
        b.needs_rolling.push_back(row.id);
      } else {
        note_undecryptable(b, row, c.reason == crypto::Reason::ok ? d.reason : c.reason,
                           c.timestamp, acknowledged);
      }
      continue;
    }
    if (mode == Mode::scan || mode == Mode::preflight) {
      ++b.tally.classify_ops;
      auto c = mode == Mode::scan ? keys.classify_deep(row.token.view())
                                  : keys.classify(row.token.view());
      if (c.reason != crypto::Reason::ok || c.key_index < 0) {
        note_undecryptable(b, row,
                           c.reason == crypto::Reason::ok ? crypto::Reason::unknown_key : c.reason,
                           c.timestamp, acknowledged);
        continue;
      }
      if (c.double_encrypted) note_double_encrypted(b, row);
      b.tally.longest_token = std::max(b.tally.longest_token, c.canonical_length);
      ++b.tally.by_key[c.key_index];
      if (c.key_index == 0) {
        ++b.tally.active;
        if (has_flag && !flag_true) ++b.tally.flag_wrong;
      } else {
        ++b.tally.rolling;
      }
      continue;
    }
    // migrate
    ++b.tally.classify_ops;
    auto r = keys.rotate(row.token.view());
    if (r.reason != crypto::Reason::ok || r.key_index < 0) {
      note_undecryptable(b, row,
                         r.reason == crypto::Reason::ok ? crypto::Reason::unknown_key : r.reason,
                         r.timestamp, acknowledged);
      continue;
    }
    ++b.tally.by_key[r.key_index];
    if (r.key_index == 0 && !r.token.empty()) {
      // Under the active key, in a spelling only Python's lenient decoder reads: written
      // back canonical (the same bytes) and journaled like a rotation, so that the row no
      // longer depends on a decoder's leniency (pyca's newer one has none).
      ++b.tally.respelled;
      add_change(b, row, std::move(r.token));
      continue;
    }
    if (r.key_index == 0) {
      ++b.tally.active;
      if (has_flag && !flag_true) {
        ++b.tally.flag_wrong;
        add_change(b, row, row.token.clone());
      } else {
        ++b.tally.active_ok;
      }
      continue;
    }
    ++b.tally.rolling;
    ++b.tally.decrypt_ops;
    ++b.tally.encrypt_ops;
    add_change(b, row, std::move(r.token));
  }
  // Tokens not moved into changes are wiped now rather than when the batch dies.
  for (auto& row : b.rows) row.token.wipe();
}

}  // namespace keymig::engine::detail
