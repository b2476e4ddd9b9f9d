#include "keymig/locked.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <bitset>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "keymig/log.hpp"

namespace keymig {

namespace {

// A process keeps a few keys (32 bytes each) and their texts (44): one chunk of 256
// slots holds them all. A larger secret gets a mapping of its own.
constexpr std::size_t kSlot = 32;
constexpr std::size_t kSlots = 256;
constexpr std::size_t kChunkBytes = kSlot * kSlots;

// allocate and release must agree on both, or the bitmap goes wrong.
bool own_mapping(std::size_t size) noexcept {
  return size > kChunkBytes / 2;
}
std::size_t slots_for(std::size_t size) noexcept {
  return (size + kSlot - 1) / kSlot;
}

struct Chunk {
  unsigned char* base = nullptr;
  std::bitset<kSlots> used;
};

class Pool {
 public:
  void* allocate(std::size_t size) {
    if (size == 0) size = 1;
    std::lock_guard lock(mutex_);
    if (own_mapping(size)) return map(size);
    const std::size_t n = slots_for(size);
    for (Chunk& chunk : chunks_)
      if (void* p = take(chunk, n)) return p;
    chunks_.push_back(Chunk{static_cast<unsigned char*>(map(kChunkBytes)), {}});
    return take(chunks_.back(), n);
  }

  void release(void* data, std::size_t size) noexcept {
    if (data == nullptr) return;
    if (size == 0) size = 1;
    secure_wipe(data, size);
    std::lock_guard lock(mutex_);
    if (own_mapping(size)) {
      ::munlock(data, rounded(size));
      ::munmap(data, rounded(size));
      state_.bytes_mapped -= rounded(size);
      return;
    }
    auto* p = static_cast<unsigned char*>(data);
    for (Chunk& chunk : chunks_) {
      if (p < chunk.base || p >= chunk.base + kChunkBytes) continue;
      const std::size_t first = static_cast<std::size_t>(p - chunk.base) / kSlot;
      for (std::size_t i = 0; i < slots_for(size); ++i) chunk.used.reset(first + i);
      return;
    }
  }

  LockedMemoryState state() noexcept {
    std::lock_guard lock(mutex_);
    return state_;
  }

 private:
  static std::size_t rounded(std::size_t size) noexcept {
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return (size + page - 1) / page * page;
  }

  static void* take(Chunk& chunk, std::size_t n) noexcept {
    for (std::size_t first = 0; first + n <= kSlots; ++first) {
      std::size_t i = 0;
      while (i < n && !chunk.used.test(first + i)) ++i;
      if (i == n) {
        for (i = 0; i < n; ++i) chunk.used.set(first + i);
        return chunk.base + first * kSlot;
      }
      first += i;  // the slot at first + i is taken: start after it
    }
    return nullptr;
  }

  // Fresh anonymous pages are zeroed by the kernel.
  void* map(std::size_t size) {
    const std::size_t bytes = rounded(size);
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    ::madvise(p, bytes, MADV_DONTDUMP);
    state_.bytes_mapped += bytes;
    if (::mlock(p, bytes) != 0) {
      const int error = errno;
      if (state_.all_locked)
        KEYMIG_LOG(warn, "process", "key_memory_not_locked", {"error", std::strerror(error)},
                   {"hint",
                    "key memory may be swapped out: raise RLIMIT_MEMLOCK (ulimit -l) or grant "
                    "CAP_IPC_LOCK"});
      state_.all_locked = false;
    }
    return p;
  }

  std::mutex mutex_;
  std::vector<Chunk> chunks_;
  LockedMemoryState state_;
};

Pool& pool() {
  // Never destroyed: a static key (a test's, a cached ring) may outlive any other static.
  static Pool* const p = new Pool;
  return *p;
}

}  // namespace

void* locked_alloc(std::size_t size) {
  return pool().allocate(size);
}

void locked_free(void* data, std::size_t size) noexcept {
  pool().release(data, size);
}

LockedMemoryState locked_memory_state() noexcept {
  return pool().state();
}

LockedSecret::LockedSecret(SecretString&& value) : LockedSecret(value.view()) {
  value.wipe();
}

LockedSecret::LockedSecret(std::string_view value) {
  if (value.empty()) return;
  data_ = static_cast<char*>(locked_alloc(value.size()));
  std::memcpy(data_, value.data(), value.size());
  size_ = value.size();
}

LockedSecret::LockedSecret(LockedSecret&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

LockedSecret& LockedSecret::operator=(LockedSecret&& other) noexcept {
  if (this != &other) {
    locked_free(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

LockedSecret::~LockedSecret() {
  locked_free(data_, size_);
}

}  // namespace keymig
