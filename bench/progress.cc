#include "bench/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

namespace cohort::bench {

Progress::Progress(bool enabled, FILE* stream, bool force)
    : enabled_(enabled && stream != nullptr && (force || isatty(fileno(stream)) == 1)),
      stream_(stream) {}

Progress::~Progress() { Clear(); }

void Progress::Update(const std::string& text, bool now) {
  if (!enabled_) return;
  auto current = std::chrono::steady_clock::now();
  if (!now && shown_ && current - last_ < std::chrono::milliseconds(100)) return;
  last_ = current;
  size_t width = 80;
  winsize size{};
  if (ioctl(fileno(stream_), TIOCGWINSZ, &size) == 0 && size.ws_col > 1) width = size.ws_col;
  std::string line = text.size() >= width ? text.substr(0, width - 1) : text;
  // Carriage return, the text, then erase to the end of the line.
  std::fprintf(stream_, "\r%s\033[K", line.c_str());
  std::fflush(stream_);
  shown_ = true;
}

void Progress::Clear() {
  if (!enabled_ || !shown_) return;
  std::fputs("\r\033[K", stream_);
  std::fflush(stream_);
  shown_ = false;
}

}  // namespace cohort::bench
