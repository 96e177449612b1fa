// The virtual ESP32's ESP-IDF heap (idfheap.h says why): a budget the GC heap's added areas are
// counted against, as an ESP32's are against the ESP-IDF heap. As on a board, gc.mem_free()
// counts what could still be added (py/modgc.c); CITYNODE_IDF_LOG names a file that gets a line
// for each area added ("+BYTES LEFT") or given back ("-BYTES LEFT"): the bench reads the growth
// there, as nothing a board runs can tell it.
#include <stdio.h>
#include <stdlib.h>

#include "py/mpconfig.h"
#include "py/gc.h"

#define MAX_AREAS (8)
#define MAX_BUDGET (64L * 1024 * 1024)   // far more than any ESP32's ESP-IDF heap; a long is 32 bits here

static long idf_left = -1;   // bytes the emulated ESP-IDF heap can still give; -1: not read yet
static struct { void *p; size_t n; } areas[MAX_AREAS];

static long left(void) {
    if (idf_left < 0) {
        const char *s = getenv("CITYNODE_IDF_HEAP");
        char *end = NULL;
        long long v = s ? strtoll(s, &end, 10) : 0;
        if (s && end && (*end == 'k' || *end == 'K')) {
            v = v > MAX_BUDGET ? MAX_BUDGET : v * 1024;
        }
        idf_left = v <= 0 ? 0 : v > MAX_BUDGET ? MAX_BUDGET : (long)v;
    }
    return idf_left;
}

static void note(char sign, size_t n) {
    const char *path = getenv("CITYNODE_IDF_LOG");
    FILE *f = path ? fopen(path, "a") : NULL;
    if (f != NULL) {
        fprintf(f, "%c%lu %ld\n", sign, (unsigned long)n, idf_left);
        fclose(f);
    }
}

// What py/gc.c may take for a new area: on a board, the ESP-IDF heap's largest free block.
size_t gc_get_max_new_split(void) {
    return (size_t)left();
}

void *citynode_idf_alloc(size_t size) {
    if ((long)size > left()) {
        return NULL;
    }
    for (size_t i = 0; i < MAX_AREAS; i++) {
        if (areas[i].p == NULL) {
            void *p = malloc(size);
            if (p != NULL) {
                areas[i].p = p;
                areas[i].n = size;
                idf_left -= (long)size;
                note('+', size);
            }
            return p;
        }
    }
    return NULL;   // more areas than a node would ever add: no growth rather than no record
}

// py/gc.c frees an added area once a collection leaves it empty: back into the budget.
void citynode_idf_free(void *area) {
    for (size_t i = 0; i < MAX_AREAS; i++) {
        if (areas[i].p == area) {
            idf_left += (long)areas[i].n;
            areas[i].p = NULL;
            note('-', areas[i].n);
            break;
        }
    }
    free(area);
}
