#include "command_record.hpp"

#include <chrono>

namespace keymig::engine::detail {

std::string configured_label(const config::Target& t) {
  const std::string table = t.table.find('.') == std::string::npos ? "public." + t.table : t.table;
  return table + "." + t.secret_column;
}

CommandRecord::CommandRecord(metrics::Metrics* metrics, const char* command,
                             const config::Target& target)
    : metrics_(metrics), command_(command) {
  if (!metrics_) return;
  configured_ = configured_label(target);
  metrics_->set_target(configured_);
  metrics_->set_run_in_progress(true);
}

CommandRecord::~CommandRecord() {
  if (!metrics_) return;
  metrics_->set_run_in_progress(false);
  if (!settled_) metrics_->set_last_failure(command_);
}

void CommandRecord::on_target(const std::string& label) {
  if (metrics_) metrics_->set_target(label, configured_);
}

void CommandRecord::succeeded() {
  settled_ = true;
  if (!metrics_) return;
  metrics_->set_last_success(
      command_,
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
}

}  // namespace keymig::engine::detail
