// The values.yaml loader: any file an operator (or a Helm chart) hands it, including alias
// and anchor bombs, deep nesting and duplicate keys. It must answer with a ConfigError
// (or a config), never crash or hang.
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "fuzz_support.hpp"
#include "keymig/config/config.hpp"

using namespace keymig;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const int fd = ::memfd_create("values.yaml", 0);
  if (fd < 0) std::abort();
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, data, size, 0) != static_cast<ssize_t>(size))
    std::abort();
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  try {
    (void)config::load({path}, [](const char*) { return std::optional<std::string>(); });
  } catch (const keymig::Error&) {
  }
  return 0;
}
