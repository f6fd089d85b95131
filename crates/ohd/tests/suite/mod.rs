mod agent;
mod bad_input;
mod clients;
mod rest;
mod restart;
mod seed_websocat;
mod streams;
