/* cli/serve.h — `sdw serve`: the HTTP worker (src/cli/serve.c). */
#ifndef SDW_CLI_SERVE_H
#define SDW_CLI_SERVE_H

/* Runs the worker with argv[0] = "serve" and its options after it; returns the exit code (exits
 * on bad usage). */
int sdw_cli_serve(int argc, char **argv);

#endif
