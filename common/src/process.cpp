#include "keymig/process.hpp"

#include <sys/prctl.h>
#include <sys/resource.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "keymig/locked.hpp"
#include "keymig/secure.hpp"

extern char** environ;

namespace keymig::process {

namespace {

struct Captured {
  std::mutex mutex;
  bool done = false;
  std::map<std::string, LockedSecret, std::less<>> values;
};

Captured& captured() {
  // Never destroyed before exit: the LockedSecrets wipe themselves in the destructor.
  static Captured c;
  return c;
}

}  // namespace

Hardening harden() {
  Hardening h;
  const char* allow = std::getenv(kAllowCoreDumps);
  h.core_dumps_allowed = allow != nullptr && std::string_view(allow) == "1";
  if (!h.core_dumps_allowed) {
    const struct rlimit no_core {};
    ::setrlimit(RLIMIT_CORE, &no_core);
    // Also keeps other processes of the same user from ptrace-attaching and makes
    // /proc/PID/{environ,mem} root's.
    ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  }
  return h;
}

void capture_secret_env() {
  Captured& c = captured();
  std::lock_guard lock(c.mutex);
  if (c.done) return;
  c.done = true;
  for (const char* name : kSecretVariables) {
    const std::size_t len = std::strlen(name);
    // Every entry, not only the first: execve may pass a name twice, getenv sees only the
    // first, and unsetenv takes all of them out of environ but wipes none.
    std::vector<char*> entries;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e)
      if (std::strncmp(*e, name, len) == 0 && (*e)[len] == '=') entries.push_back(*e);
    if (entries.empty()) continue;
    // The first, as getenv would have read it.
    c.values.insert_or_assign(name, LockedSecret(std::string_view(entries.front() + len + 1)));
    ::unsetenv(name);  // takes the pointers out of environ; the bytes stay where they were
    // The initial environment lives on the stack and is what /proc/PID/environ shows.
    for (char* entry : entries) secure_wipe(entry + len + 1, std::strlen(entry + len + 1));
  }
}

std::optional<std::string> secret_env(std::string_view name) {
  Captured& c = captured();
  bool secret = false;
  for (const char* s : kSecretVariables) secret = secret || name == s;
  if (secret) {
    std::lock_guard lock(c.mutex);
    if (c.done) {
      auto it = c.values.find(name);
      if (it == c.values.end()) return std::nullopt;
      return std::string(it->second.view());
    }
  }
  const char* value = std::getenv(std::string(name).c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

}  // namespace keymig::process
