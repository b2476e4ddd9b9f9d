#pragma once

// ThreadSanitizer annotations for what TBB hands from thread to thread.
//
// Debian's libtbb.so is not built with TSan, so the happens-before edges TBB makes when it
// runs a body on a worker, hands a batch to the next stage or runs a serial stage's next
// invocation on another thread are invisible to TSan, and everything a stage touches would
// look like a race. These calls name exactly those edges, so that TSan checks what keymig's
// bodies do with each other, not what TBB does. They only name edges TBB really provides:
// one that TBB does not (two invocations of a parallel body, say) would hide a real race.
// Outside a TSan build they compile to nothing.

#if defined(__SANITIZE_THREAD__)
#define KEYMIG_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KEYMIG_TSAN 1
#endif
#endif

#if defined(KEYMIG_TSAN)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
extern "C" void AnnotateIgnoreSyncBegin(const char* file, int line);
extern "C" void AnnotateIgnoreSyncEnd(const char* file, int line);
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
#endif

namespace keymig::engine::detail {

/// What this thread did before is visible to whoever later calls tsan_acquire(addr).
inline void tsan_release([[maybe_unused]] const void* addr) noexcept {
#if defined(KEYMIG_TSAN)
  __tsan_release(const_cast<void*>(addr));
#endif
}

/// What was done before each earlier tsan_release(addr) is visible from here on.
inline void tsan_acquire([[maybe_unused]] const void* addr) noexcept {
#if defined(KEYMIG_TSAN)
  __tsan_acquire(const_cast<void*>(addr));
#endif
}

/// A scope whose synchronisation and memory accesses TSan does not see: for bookkeeping
/// that makes no edge TBB makes (a lock around it would order the bodies that take it
/// and hide races between them). Only for state no body reads outside such a scope.
class TsanIgnoreScope {
 public:
  TsanIgnoreScope() noexcept {
#if defined(KEYMIG_TSAN)
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
#endif
  }
  ~TsanIgnoreScope() {
#if defined(KEYMIG_TSAN)
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
#endif
  }
  TsanIgnoreScope(const TsanIgnoreScope&) = delete;
  TsanIgnoreScope& operator=(const TsanIgnoreScope&) = delete;
};

/// One parallel_pipeline or parallel_for: the edges between its caller and the bodies TBB
/// runs for it. Build everything the bodies read first (the filters included), then make
/// the TBB call through call().
class TsanRun {
 public:
  TsanRun() = default;
  TsanRun(const TsanRun&) = delete;
  TsanRun& operator=(const TsanRun&) = delete;

  /// Runs `tbb_call` after releasing the caller's setup to every body, and acquires what
  /// every body did as soon as it returns: TBB returns (or rethrows a body's exception)
  /// only after all of them have finished.
  template <typename Call>
  void call(Call&& tbb_call) const {
    struct Returned {
      const TsanRun& run;
      ~Returned() { tsan_acquire(&run.done_); }
    };
    tsan_release(&setup_);
    const Returned returned{*this};
    tbb_call();
  }

  /// Scope of one invocation of a body. `serial` is the stage's own address if TBB runs
  /// its invocations one after another (serial_in_order), or null for a parallel body;
  /// the release at the end is in a destructor so that a body that throws still hands
  /// its exception, and what it did, to the caller that TBB rethrows it in.
  class Invocation {
   public:
    explicit Invocation(const TsanRun& run, const void* serial = nullptr) noexcept
        : run_(run), serial_(serial) {
      tsan_acquire(&run_.setup_);
      if (serial_) tsan_acquire(serial_);
    }
    Invocation(const Invocation&) = delete;
    Invocation& operator=(const Invocation&) = delete;
    ~Invocation() {
      if (serial_) tsan_release(serial_);
      tsan_release(&run_.done_);
    }

   private:
    const TsanRun& run_;
    const void* serial_;
  };

 private:
  // Only their addresses matter: each is a distinct synchronisation object for TSan.
  char setup_ = 0;
  char done_ = 0;
};

}  // namespace keymig::engine::detail
