// llama_ref.c: a tiny reference driver over llama.cpp's C API (libllama), used by
// make_fixtures.py to produce the SmolLM2 reference fixtures. It is compiled on the fly by
// make_fixtures.py with gcc against the libllama.so built by Benchmarks/build-llama-cpp.sh;
// it is not part of alignd.
//
// Usage:
//   llama_ref MODEL tokenize   INFILE          INFILE: raw UTF-8 text
//   llama_ref MODEL teacher    INFILE          INFILE: whitespace-separated token ids
//   llama_ref MODEL teacher1   INFILE          like teacher, but one token per llama_decode
//   llama_ref MODEL greedy     INFILE N        INFILE: whitespace-separated prompt token ids
//   llama_ref MODEL info
// Environment: LLAMA_REF_THREADS (default 2), LLAMA_REF_CTX (default 4096),
//   LLAMA_REF_FA = auto|on|off (flash attention, default auto = on for CPU),
//   LLAMA_REF_KV = f16|f32 (KV cache type, default f16).
//
// Output: one JSON object on stdout (llama.cpp's own log goes to stderr).
//   tokenize: {"add_bos":b,"bos":id,"eos":id,"tokens":[...]}
//             (llama_tokenize with add_special=true, parse_special=true: the llama.cpp default
//              of its examples; BOS is added only if the vocab says add_bos)
//   teacher:  {"n":N,"top1":[...],"top2":[...],"top1_logit":[...],"top2_logit":[...],
//              "top1_logprob":[...],"target_logprob":[...]}
//             position i holds the distribution over the token following tokens[0...i]
//             (one llama_decode of the whole sequence with logits at every position);
//             target_logprob[i] is log p(tokens[i+1]) (null for the last position)
//   greedy:   {"ids":[...],"runner_up":[...],"chosen_logit":[...],"runner_up_logit":[...],
//              "pieces_hex":[...],"stop":"eog"|"length"}
//             prompt decoded in one batch, then one token per llama_decode, argmax
//             (first index on exact ties, like llama.cpp's greedy sampler); stops after an
//             end-of-generation token (which is included) or after N tokens.
//   info:     {"n_vocab":..,"add_bos":..,"add_eos":..,"bos":..,"eos":..,"chat_template":"..."}
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void die(const char *msg) {
    fprintf(stderr, "llama_ref: %s\n", msg);
    exit(1);
}

static char *read_file(const char *path, long *len_out) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open input file");
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (!buf) die("out of memory");
    if (len > 0 && fread(buf, 1, (size_t)len, f) != (size_t)len) die("short read");
    buf[len] = 0;
    fclose(f);
    *len_out = len;
    return buf;
}

static llama_token *read_ids(const char *path, int *n_out) {
    long len;
    char *text = read_file(path, &len);
    int cap = 1024, n = 0;
    llama_token *ids = malloc(sizeof(llama_token) * (size_t)cap);
    char *p = text, *end;
    for (;;) {
        long v = strtol(p, &end, 10);
        if (end == p) break;
        if (n == cap) {
            cap *= 2;
            ids = realloc(ids, sizeof(llama_token) * (size_t)cap);
        }
        ids[n++] = (llama_token)v;
        p = end;
    }
    free(text);
    *n_out = n;
    return ids;
}

static void print_json_string(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        default:
            if (*p < 0x20) printf("\\u%04x", *p);
            else putchar(*p);
        }
    }
    putchar('"');
}

// Top-2 of a logit row plus log-sum-exp (for log-probabilities).
typedef struct {
    int i1, i2;
    float l1, l2;
    double lse;
} top2_t;

static top2_t top2(const float *logits, int n) {
    top2_t t = {0, 1, -INFINITY, -INFINITY, 0.0};
    for (int i = 0; i < n; i++) {
        float v = logits[i];
        if (v > t.l1) {
            t.i2 = t.i1; t.l2 = t.l1;
            t.i1 = i; t.l1 = v;
        } else if (v > t.l2) {
            t.i2 = i; t.l2 = v;
        }
    }
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)logits[i] - (double)t.l1);
    t.lse = (double)t.l1 + log(s);
    return t;
}

static void print_float_array(const char *name, const double *v, int n, bool null_last) {
    printf("\"%s\":[", name);
    for (int i = 0; i < n; i++) {
        if (i) putchar(',');
        if (null_last && i == n - 1) fputs("null", stdout);
        else printf("%.6f", v[i]);
    }
    putchar(']');
}

static void print_int_array(const char *name, const int *v, int n) {
    printf("\"%s\":[", name);
    for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", v[i]);
    putchar(']');
}

static void noop_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level >= GGML_LOG_LEVEL_WARN) fputs(text, stderr);
}

int main(int argc, char **argv) {
    if (argc < 3) die("usage: llama_ref MODEL tokenize|teacher|greedy|info [INFILE] [N]");
    const char *model_path = argv[1];
    const char *mode = argv[2];
    const int threads = getenv("LLAMA_REF_THREADS") ? atoi(getenv("LLAMA_REF_THREADS")) : 2;
    const int n_ctx = getenv("LLAMA_REF_CTX") ? atoi(getenv("LLAMA_REF_CTX")) : 4096;

    llama_log_set(noop_log, NULL);
    llama_backend_init();

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    bool vocab_only = strcmp(mode, "tokenize") == 0 || strcmp(mode, "info") == 0;
    mp.vocab_only = vocab_only;
    struct llama_model *model = llama_model_load_from_file(model_path, mp);
    if (!model) die("cannot load model");
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    if (strcmp(mode, "info") == 0) {
        const char *tmpl = llama_model_chat_template(model, NULL);
        printf("{\"n_vocab\":%d,\"add_bos\":%s,\"add_eos\":%s,\"bos\":%d,\"eos\":%d,\"chat_template\":",
               n_vocab, llama_vocab_get_add_bos(vocab) ? "true" : "false",
               llama_vocab_get_add_eos(vocab) ? "true" : "false", llama_vocab_bos(vocab),
               llama_vocab_eos(vocab));
        if (tmpl) print_json_string(tmpl); else fputs("null", stdout);
        puts("}");
        llama_model_free(model);
        return 0;
    }

    if (argc < 4) die("missing INFILE");

    if (strcmp(mode, "tokenize") == 0) {
        long len;
        char *text = read_file(argv[3], &len);
        int cap = (int)len + 16;
        llama_token *ids = malloc(sizeof(llama_token) * (size_t)cap);
        int n = llama_tokenize(vocab, text, (int32_t)len, ids, cap, true, true);
        if (n < 0) die("tokenize failed");
        printf("{\"add_bos\":%s,\"bos\":%d,\"eos\":%d,", llama_vocab_get_add_bos(vocab) ? "true" : "false",
               llama_vocab_bos(vocab), llama_vocab_eos(vocab));
        print_int_array("tokens", ids, n);
        puts("}");
        llama_model_free(model);
        return 0;
    }

    int n_prompt;
    llama_token *prompt = read_ids(argv[3], &n_prompt);
    if (n_prompt == 0) die("empty token list");
    int n_gen = argc > 4 ? atoi(argv[4]) : 32;

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)n_ctx;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.no_perf = true;
    const char *fa = getenv("LLAMA_REF_FA");
    if (fa && strcmp(fa, "on") == 0) cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    else if (fa && strcmp(fa, "off") == 0) cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    else if (fa && strcmp(fa, "auto") != 0) die("LLAMA_REF_FA must be auto, on or off");
    const char *kv = getenv("LLAMA_REF_KV");
    if (kv && strcmp(kv, "f32") == 0) { cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32; }
    else if (kv && strcmp(kv, "f16") != 0) die("LLAMA_REF_KV must be f16 or f32");
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) die("cannot create context");
    if (n_prompt + n_gen > n_ctx) die("sequence longer than n_ctx");

    struct llama_batch batch = llama_batch_init(n_prompt, 0, 1);
    const bool one_by_one = strcmp(mode, "teacher1") == 0;
    const bool all_logits = strcmp(mode, "teacher") == 0 || one_by_one;
    // teacher1: rows of logits copied out after each single-token decode. (n_prompt, n_vocab)
    float *rows = NULL;
    if (one_by_one) {
        rows = malloc(sizeof(float) * (size_t)n_prompt * (size_t)n_vocab);
        if (!rows) die("out of memory");
        for (int i = 0; i < n_prompt; i++) {
            batch.token[0] = prompt[i];
            batch.pos[0] = i;
            batch.n_seq_id[0] = 1;
            batch.seq_id[0][0] = 0;
            batch.logits[0] = true;
            batch.n_tokens = 1;
            if (llama_decode(ctx, batch) != 0) die("llama_decode failed");
            memcpy(rows + (size_t)i * (size_t)n_vocab, llama_get_logits_ith(ctx, 0), sizeof(float) * (size_t)n_vocab);
        }
    } else {
        for (int i = 0; i < n_prompt; i++) {
            batch.token[i] = prompt[i];
            batch.pos[i] = i;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = 0;
            batch.logits[i] = all_logits || i == n_prompt - 1;
        }
        batch.n_tokens = n_prompt;
        if (llama_decode(ctx, batch) != 0) die("llama_decode failed");
    }

    if (all_logits) {
        int *t1 = malloc(sizeof(int) * (size_t)n_prompt), *t2 = malloc(sizeof(int) * (size_t)n_prompt);
        double *l1 = malloc(sizeof(double) * (size_t)n_prompt), *l2 = malloc(sizeof(double) * (size_t)n_prompt);
        double *lp1 = malloc(sizeof(double) * (size_t)n_prompt), *lpt = malloc(sizeof(double) * (size_t)n_prompt);
        for (int i = 0; i < n_prompt; i++) {
            const float *row = one_by_one ? rows + (size_t)i * (size_t)n_vocab : llama_get_logits_ith(ctx, i);
            if (!row) die("no logits");
            top2_t t = top2(row, n_vocab);
            t1[i] = t.i1; t2[i] = t.i2; l1[i] = t.l1; l2[i] = t.l2;
            lp1[i] = (double)t.l1 - t.lse;
            lpt[i] = i + 1 < n_prompt ? (double)row[prompt[i + 1]] - t.lse : 0.0;
        }
        printf("{\"n\":%d,", n_prompt);
        print_int_array("top1", t1, n_prompt); putchar(',');
        print_int_array("top2", t2, n_prompt); putchar(',');
        print_float_array("top1_logit", l1, n_prompt, false); putchar(',');
        print_float_array("top2_logit", l2, n_prompt, false); putchar(',');
        print_float_array("top1_logprob", lp1, n_prompt, false); putchar(',');
        print_float_array("target_logprob", lpt, n_prompt, true);
        puts("}");
    } else if (strcmp(mode, "greedy") == 0) {
        int *ids = malloc(sizeof(int) * (size_t)n_gen), *ru = malloc(sizeof(int) * (size_t)n_gen);
        double *lc = malloc(sizeof(double) * (size_t)n_gen), *lr = malloc(sizeof(double) * (size_t)n_gen);
        int n_out = 0;
        const char *stop = "length";
        struct llama_batch one = llama_batch_init(1, 0, 1);
        int logit_index = n_prompt - 1;
        for (int step = 0; step < n_gen; step++) {
            const float *row = llama_get_logits_ith(ctx, logit_index);
            if (!row) die("no logits");
            top2_t t = top2(row, n_vocab);
            ids[n_out] = t.i1; ru[n_out] = t.i2; lc[n_out] = t.l1; lr[n_out] = t.l2;
            n_out++;
            if (llama_vocab_is_eog(vocab, t.i1)) { stop = "eog"; break; }
            if (step == n_gen - 1) break;
            one.token[0] = t.i1;
            one.pos[0] = n_prompt + step;
            one.n_seq_id[0] = 1;
            one.seq_id[0][0] = 0;
            one.logits[0] = true;
            one.n_tokens = 1;
            if (llama_decode(ctx, one) != 0) die("llama_decode failed");
            logit_index = 0;
        }
        putchar('{');
        print_int_array("ids", ids, n_out); putchar(',');
        print_int_array("runner_up", ru, n_out); putchar(',');
        print_float_array("chosen_logit", lc, n_out, false); putchar(',');
        print_float_array("runner_up_logit", lr, n_out, false); putchar(',');
        fputs("\"pieces_hex\":[", stdout);
        for (int i = 0; i < n_out; i++) {
            char buf[256];
            int len = llama_token_to_piece(vocab, ids[i], buf, sizeof buf, 0, true);
            if (len < 0) die("token_to_piece failed");
            if (i) putchar(',');
            putchar('"');
            for (int k = 0; k < len; k++) printf("%02x", (unsigned char)buf[k]);
            putchar('"');
        }
        printf("],\"stop\":\"%s\"}\n", stop);
        llama_batch_free(one);
    } else {
        die("unknown mode");
    }

    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
