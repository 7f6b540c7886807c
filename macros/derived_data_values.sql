{#- Builds int_derived_data_values from the compiled definitions in
    stg_healthpipe__derived_data_elements: per definition, the records of its source fact that
    pass its filter, grouped by org unit, period (the period whose type is the definition's
    and that holds the record's date, or the record's own period id) and, when it is
    disaggregated, the values of its disaggregate_by column, which become category option
    combos; aggregated by its value_sql. Only the facts listed here can be read (pipelines/derived.py RECORD_SOURCES
    holds the same list), so a definition never names an arbitrary relation. -#}
{% macro hp_record_sources() %}
    {{ return(['fct_lab_results', 'fct_stock', 'fct_workforce', 'fct_facility_assessments',
               'fct_governance', 'fct_cross_sectoral', 'fct_community_reports',
               'fct_nutrition_screenings', 'fct_encounters', 'fct_alert_timeliness']) }}
{% endmacro %}

{#- The record sources built from the alert records, which alerting writes after the models it
    reads are built: their derived values (7-1-7 timeliness) are kept apart
    (int_alert_data_values) so that nothing alerting reads, and none of the large aggregation,
    waits for or is rebuilt after the alerts (pipelines/run.py). -#}
{% macro hp_alert_record_sources() %}
    {{ return(['fct_alert_timeliness']) }}
{% endmacro %}

{#- The derived values of the definitions whose source is one of `sources`. -#}
{% macro hp_derived_data_values_sql(definitions_relation, periods_relation, sources) %}
    {%- set definitions = [] -%}
    {%- if execute -%}
        {%- set rows = run_query(
            "select data_element_id, source_model, filter_sql, value_sql, period_type, "
            ~ "date_column, period_column, org_unit_column, disaggregate_by from " ~ definitions_relation
            ~ " order by data_element_id") -%}
        {%- for row in rows.rows -%}
            {%- if row[1] not in hp_record_sources() -%}
                {{ exceptions.raise_compiler_error(
                    "derived data element " ~ row[0] ~ ": " ~ row[1] ~ " is not a record source") }}
            {%- endif -%}
            {%- if row[1] in sources -%}
            {%- do definitions.append({
                'id': row[0], 'source': row[1], 'filter': row[2] | replace('double precision', hp_type_double()), 'value': row[3] | replace('double precision', hp_type_double()),
                'period_type': row[4], 'date_column': row[5], 'period_column': row[6],
                'org_unit_column': row[7], 'disaggregate_by': row[8]}) -%}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}

    {%- if definitions | length == 0 %}
    select
        cast(null as {{ hp_type_text() }}) as data_element_id,
        cast(null as {{ hp_type_text() }}) as category_option_combo_id,
        cast(null as {{ hp_type_text() }}) as org_unit_id,
        cast(null as {{ hp_type_text() }}) as period_id,
        cast(null as {{ hp_type_double() }}) as value,
        cast(null as {{ hp_type_text() }}) as source
    where 1 = 0
    {%- endif %}

    {%- for d in definitions %}
    select
        '{{ d.id }}' as data_element_id,
        {%- if d.disaggregate_by %}
        cast(r.{{ d.disaggregate_by }} as {{ hp_type_text() }}) as category_option_combo_id,
        {%- else %}
        cast(null as {{ hp_type_text() }}) as category_option_combo_id,
        {%- endif %}
        r.{{ d.org_unit_column }} as org_unit_id,
        p.period_id,
        cast({{ d.value }} as {{ hp_type_double() }}) as value,
        '{{ d.source }}' as source
    from {{ ref(d.source) }} as r
    join {{ periods_relation }} as p
        on p.period_type = '{{ d.period_type }}'
        {%- if d.period_column %}
        and p.period_id = r.{{ d.period_column }}
        {%- else %}
        and cast(r.{{ d.date_column }} as date) >= cast(p.start_date as date)
        and cast(r.{{ d.date_column }} as date) <= cast(p.end_date as date)
        {%- endif %}
    where r.{{ d.org_unit_column }} is not null and ({{ d.filter }})
        {%- if d.disaggregate_by %} and r.{{ d.disaggregate_by }} is not null{% endif %}
    group by r.{{ d.org_unit_column }}, p.period_id
        {%- if d.disaggregate_by %}, r.{{ d.disaggregate_by }}{% endif %}
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}
{% endmacro %}
