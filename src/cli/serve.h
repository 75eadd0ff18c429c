/* cli/serve.h — `sdw serve`: the HTTP worker (src/cli/serve.c). */
#ifndef SDW_CLI_SERVE_H
#define SDW_CLI_SERVE_H

/* Runs the worker with the arguments after "serve"; returns the exit code (exits on bad usage). */
int sdw_cli_serve(int argc, char **argv);

#endif
