mod agent;
mod bad_input;
mod clients;
mod rest;
mod restart;
mod seed_websocat;
mod streams;
mod web_ui_routes;
