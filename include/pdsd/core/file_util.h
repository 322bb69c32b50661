// File helpers shared by every stage: read-only mmap, whole-file reads,
// atomic writes (temp file + fsync + rename) and sha256.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace pdsd {

// Read-only memory map of a whole file. Move-only; unmaps on destruction.
// An empty file maps to data() == nullptr, size() == 0.
class MappedFile {
public:
    MappedFile() = default;
    explicit MappedFile(const std::string& path);  // throws IoError
    ~MappedFile();
    MappedFile(MappedFile&& other) noexcept;
    MappedFile& operator=(MappedFile&& other) noexcept;
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }
    const std::string& path() const { return path_; }

private:
    void release();
    std::string path_;
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

// Streams bytes into a temp file beside `path`; commit() fsyncs and renames it
// into place. Destroyed without commit() (an exception, a crash), the temp file is
// removed (or left as a dot-file that is never mistaken for the real one).
class AtomicFileWriter {
public:
    explicit AtomicFileWriter(std::string path);  // throws IoError
    ~AtomicFileWriter();
    AtomicFileWriter(const AtomicFileWriter&) = delete;
    AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

    void write(const void* data, size_t n);       // throws IoError (disk full...)
    void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
    uint64_t bytes_written() const { return written_; }
    void commit();                                // fsync + rename; throws IoError

private:
    std::string path_;
    std::string tmp_;
    int fd_ = -1;
    uint64_t written_ = 0;
};

// Whole file as bytes; throws IoError naming the path when it cannot be read.
std::string read_file(const std::string& path);

// Write `bytes` to `path` atomically: a temp file in the same folder is written,
// fsynced and renamed over `path`, so readers see the old or the new file, never half.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Lowercase hex sha256 of bytes / of a file's content (streamed).
std::string sha256_hex(std::string_view bytes);
std::string sha256_file(const std::string& path);

}  // namespace pdsd
