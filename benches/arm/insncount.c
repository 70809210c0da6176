/*
 * A qemu-user TCG plugin (plugin API version 1, qemu 7.2) that counts the guest instructions a
 * program executes and writes the total to the file named by its `out=` argument (or stderr):
 *
 *   qemu-aarch64 -cpu cortex-a72 -plugin ./insncount.so,out=count.txt ./program args
 *
 * Each translated block adds its instruction count to one counter every time it runs (an inline
 * add, no callback). The add is not atomic: run the measured program on one thread.
 * With `blocks=FILE` it also writes, for every translated block that ran, a line
 * "<guest address, hex> <instructions> <executions>" (benches/arm/profile.py names the
 * functions they belong to).
 * Debian ships neither plugins nor qemu-plugin.h; the few declarations needed are below.
 * Build: gcc -O2 -shared -fPIC -o insncount.so insncount.c
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                                  qemu_plugin_vcpu_tb_trans_cb_t cb);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb,
                                                     enum qemu_plugin_op op, void *ptr,
                                                     uint64_t imm);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb,
                                           void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t executed;
static char out_path[4096];

/* One translation of a block (a block translated again gets another). */
struct block {
    uint64_t vaddr;
    uint64_t insns;
    uint64_t executions;
    struct block *next;
};
static struct block *blocks;
static char blocks_path[4096];

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t insns = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, insns);
    if (blocks_path[0]) {
        struct block *block = calloc(1, sizeof *block);
        if (block == NULL) {
            fprintf(stderr, "insncount: out of memory for block records\n");
            abort();
        }
        block->vaddr = qemu_plugin_tb_vaddr(tb);
        block->insns = insns;
        block->next = blocks;
        blocks = block;
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                 &block->executions, 1);
    }
}

static void write_blocks(void)
{
    FILE *out = fopen(blocks_path, "w");
    if (out == NULL) {
        fprintf(stderr, "insncount: cannot write %s\n", blocks_path);
        return;
    }
    for (struct block *block = blocks; block != NULL; block = block->next) {
        if (block->executions > 0)
            fprintf(out, "%llx %llu %llu\n", (unsigned long long)block->vaddr,
                    (unsigned long long)block->insns, (unsigned long long)block->executions);
    }
    fclose(out);
}

static void on_plugin_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    if (blocks_path[0])
        write_blocks();
    FILE *out = out_path[0] ? fopen(out_path, "w") : stderr;
    if (out == NULL) {
        fprintf(stderr, "insncount: cannot write %s\n", out_path);
        return;
    }
    fprintf(out, "%llu\n", (unsigned long long)executed);
    if (out != stderr)
        fclose(out);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_t *info,
                                                               int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
        } else if (strncmp(argv[i], "blocks=", 7) == 0) {
            snprintf(blocks_path, sizeof blocks_path, "%s", argv[i] + 7);
        } else {
            fprintf(stderr, "insncount: unknown argument %s (expected out=FILE or blocks=FILE)\n",
                    argv[i]);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
