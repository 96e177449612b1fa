// The virtual ESP32's ESP-IDF heap: what an ESP32's GC heap grows into.
//
// An ESP32 image is built with MICROPY_GC_SPLIT_HEAP_AUTO: when a collection leaves no room for
// an allocation, py/gc.c adds a heap area taken from the ESP-IDF heap, as large as the heap so
// far (it doubles) or the allocation, but no larger than gc_get_max_new_split(), which the esp32
// port answers with the ESP-IDF heap's largest free block; Wi-Fi and TLS draw on that heap too.
// tools/esp32-unix.sh builds the virtual ESP32 the same way, with this file force-included
// (-include) so that py/gc.c allocates and frees its areas here, out of a budget that stands for
// that free block: CITYNODE_IDF_HEAP in the environment, in bytes or with a k suffix ("64k").
// Unset or 0, the heap never grows: what fits then fits an ESP32's boot heap alone.
#ifndef CITYNODE_IDFHEAP_H
#define CITYNODE_IDFHEAP_H

#include <stddef.h>

void *citynode_idf_alloc(size_t size);
void citynode_idf_free(void *area);

#define MP_PLAT_ALLOC_HEAP(size) citynode_idf_alloc(size)
#define MP_PLAT_FREE_HEAP(area) citynode_idf_free(area)

#endif
