# teamtalk-rs: every daemon and the `teamtalk` command in one small image.
#
#   docker build -t teamtalk-rs .
#   docker run --rm -p 8000:8000 -p 8080:8080 -p 8800:8800 teamtalk-rs up --host 0.0.0.0
#
# A multi-host layout with separate daemons: deploy/compose.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p teamtalk-daemons --bins \
 && mkdir /out \
 && cp target/release/teamtalk target/release/msg_server target/release/login_server \
       target/release/route_server target/release/db_proxy_server target/release/msfs \
       target/release/file_server /out/

FROM debian:bookworm-slim
RUN useradd --system --home-dir /var/lib/teamtalk --create-home teamtalk
COPY --from=build /out/ /usr/local/bin/
USER teamtalk
WORKDIR /var/lib/teamtalk
VOLUME /var/lib/teamtalk
# msg_server, login HTTP, login legacy, login<-msg, route, db_proxy, WebSocket, admin
EXPOSE 8000 8080 8008 8100 8200 10600 8800 8090
ENTRYPOINT ["teamtalk"]
CMD ["up", "--host", "0.0.0.0", "--data-dir", "/var/lib/teamtalk"]
