{#- Large facts kept by period year, so that a build rewrites only the years whose rows changed.

    A model using these (fct_data_values) is incremental with a `period_year` column:
    - its incremental SQL (hp_changed_years_only) computes the rows it would build, compares
      each year's row count and fingerprint (a sum of row hashes) with the year in the table,
      and keeps only the years that differ. A year the table holds but the data no longer has
      comes out as one marker row (every column NULL but period_year);
    - DuckDB and PostgreSQL replace those years with the strategy `hp_replace_years` (delete
      the years, insert the new rows, never the markers). On PostgreSQL the table is a real
      partitioned table, one partition per year (postgres__create_table_as below);
    - Spark writes a parquet table partitioned by period_year and overwrites the changed
      partitions (dbt-spark's insert_overwrite, dynamic partition mode); a post-hook
      (hp_drop_vanished_years) drops the partitions left holding only a marker.
    A full refresh builds the whole table, as before. -#}

{%- macro hp_period_partition_config() -%}
    {%- if target.type == 'spark' -%}
        {{ return({
            'materialized': 'incremental',
            'incremental_strategy': 'insert_overwrite',
            'partition_by': ['period_year'],
            'file_format': 'parquet',
            'on_schema_change': 'fail',
            'post_hook': ["{{ hp_drop_vanished_years(this) }}"],
        }) }}
    {%- else -%}
        {{ return({
            'materialized': 'incremental',
            'incremental_strategy': 'hp_replace_years',
            'hp_partition_year_column': 'period_year',
            'on_schema_change': 'fail',
        }) }}
    {%- endif -%}
{%- endmacro %}

{#- One hash of a row's columns (any types, NULLs included), as a bigint-sized number. -#}
{% macro hp_row_hash(columns) -%}
    {{ return(adapter.dispatch('hp_row_hash', 'healthpipe')(columns)) }}
{%- endmacro %}

{% macro default__hp_row_hash(columns) -%}
    hash({{ columns | join(', ') }})
{%- endmacro %}

{% macro postgres__hp_row_hash(columns) -%}
    hashtextextended(cast(row({{ columns | join(', ') }}) as text), 0)
{%- endmacro %}

{% macro spark__hp_row_hash(columns) -%}
    xxhash64({{ columns | join(', ') }})
{%- endmacro %}

{#- The model's SQL on an incremental build: `fresh` (a CTE name) holds every row the model
    would build, with period_year; only the rows of the years that differ from {{ this }} are
    kept, plus a marker row per year that {{ this }} holds and fresh no longer has. The sums
    are decimals: 64-bit hashes overflow a bigint sum (and Spark's ANSI mode refuses that). -#}
{% macro hp_changed_years_only(fresh, columns) -%}
{%- set hashed = hp_row_hash(columns) %}
fresh_years as (
    select period_year, count(*) as row_count,
        sum(cast({{ hashed }} as decimal(38, 0))) as fingerprint
    from {{ fresh }}
    group by period_year
),

kept_years as (
    select period_year, count(*) as row_count,
        sum(cast({{ hashed }} as decimal(38, 0))) as fingerprint
    from {{ this }}
    group by period_year
),

changed_years as (
    select f.period_year
    from fresh_years as f
    left join kept_years as k on k.period_year = f.period_year
    where k.period_year is null or k.row_count <> f.row_count or k.fingerprint <> f.fingerprint
)

select {{ columns | join(', ') }}
from {{ fresh }}
where period_year in (select period_year from changed_years)

union all

select
    {%- for column in columns %}
    {{ 'k.period_year' if column == 'period_year' else 'null' }} as {{ column }}{{ ',' if not loop.last }}
    {%- endfor %}
from kept_years as k
where k.period_year not in (select period_year from fresh_years)
{%- endmacro %}

{#- DuckDB and PostgreSQL: replace the years present in the new rows (markers included), then
    insert the new rows but the markers (the first column is never NULL in a real row). -#}
{% macro get_incremental_hp_replace_years_sql(arg_dict) -%}
    {%- set destination = arg_dict['target_relation'] -%}
    {%- set source = arg_dict['temp_relation'] -%}
    {%- set year = config.get('hp_partition_year_column', 'period_year') -%}
    {%- set columns = arg_dict['dest_columns'] | map(attribute='quoted') | list -%}
    {%- set found = run_query("select distinct " ~ year ~ " from " ~ source ~ " where " ~ year ~ " is not null order by 1") -%}
    {%- set years = found.columns[0].values() | list if execute else [] -%}
    {%- do log(destination.identifier ~ ": " ~ (("rewriting period years " ~ years | join(', ')) if years else "no period year changed"), info=true) -%}
    {%- if target.type == 'postgres' %}
        {{ hp_create_year_partitions(destination, years) }}
    {%- endif %}
    delete from {{ destination }} where {{ year }} in (select distinct {{ year }} from {{ source }});
    insert into {{ destination }} ({{ columns | join(', ') }})
    select {{ columns | join(', ') }} from {{ source }} where {{ columns[0] }} is not null;
{%- endmacro %}

{#- PostgreSQL: a partition for each of `years` that `target` has none for yet. -#}
{% macro hp_create_year_partitions(target, years) -%}
    {%- set existing = run_query(
        "select pg_get_expr(c.relpartbound, c.oid) from pg_inherits i "
        ~ "join pg_class c on c.oid = i.inhrelid "
        ~ "where i.inhparent = '" ~ target.include(database=false) ~ "'::regclass"
    ) -%}
    {%- set bounds = existing.columns[0].values() | list if execute else [] -%}
    {%- for year in years -%}
        {%- if ("FOR VALUES IN (" ~ year ~ ")") not in bounds %}
    create table {{ hp_year_partition(target, year) }} partition of {{ target }} for values in ({{ year }});
        {%- endif -%}
    {%- endfor -%}
{%- endmacro %}

{#- A partition's name: the table's, the year and the build, so that a full refresh's new table
    (built beside the old one, then renamed over it) never meets the old one's partitions. -#}
{% macro hp_year_partition(target, year) -%}
    {%- set suffix = '_y' ~ year ~ '_' ~ invocation_id[:8] -%}
    {{ adapter.quote(target.schema) }}.{{ adapter.quote(target.identifier[:63 - suffix | length] ~ suffix) }}
{%- endmacro %}

{#- PostgreSQL: a model configured with hp_partition_year_column is created as a table
    partitioned by that column's values, one partition per year present and a default one;
    every other table (and every temporary table) as dbt creates it. -#}
{% macro postgres__create_table_as(temporary, relation, sql) -%}
    {%- set year = config.get('hp_partition_year_column') if config is defined else none -%}
    {%- if temporary or not year -%}
        {{ return(dbt.postgres__create_table_as(temporary, relation, sql)) }}
    {%- endif -%}
    {%- set staged = relation.incorporate(path={'identifier': relation.identifier ~ '__hp_rows', 'schema': none, 'database': none}) -%}
    create temporary table {{ staged.identifier }} on commit drop as
    {{ sql }}
    ;
    create table {{ relation }} (like {{ staged.identifier }}) partition by list ({{ year }});
    create table {{ hp_year_partition(relation, 'default') }} partition of {{ relation }} default;
    do $hp$
    declare y integer;
    begin
        for y in select distinct {{ year }} from {{ staged.identifier }} where {{ year }} is not null loop
            execute format('create table %I.%I partition of {{ relation }} for values in (%s)',
                {{ "'" ~ relation.schema ~ "'" }},
                left({{ "'" ~ relation.identifier ~ "'" }}, 63 - length('_y' || y || '_{{ invocation_id[:8] }}'))
                    || '_y' || y || '_{{ invocation_id[:8] }}',
                y);
        end loop;
    end
    $hp$;
    insert into {{ relation }} select * from {{ staged.identifier }};
{%- endmacro %}

{#- Spark: drop the partitions an incremental build left holding only a marker row. -#}
{% macro hp_drop_vanished_years(relation) -%}
    {%- if is_incremental() -%}
        {%- set vanished = run_query(
            "select period_year from " ~ relation ~ " group by period_year having count(data_element_id) = 0"
        ) -%}
        {%- for row in vanished -%}
            {%- do run_query('alter table ' ~ relation ~ ' drop if exists partition (period_year = ' ~ row[0] ~ ')') -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro %}
