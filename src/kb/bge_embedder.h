// Private to src/kb: registers the "bge" embedder factory (BERT models in libtorch via
// model/bert.h). make_embedder() calls it once.
#pragma once

namespace pdsd::kb {
void register_bge_embedder();
}
